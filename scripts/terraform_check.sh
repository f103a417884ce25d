#!/usr/bin/env bash
# Checks the AWS infrastructure code offline:
#   1. terraform fmt -check over terraform/ and environments/;
#   2. terraform init -backend=false + validate of every module and stack whose providers are in
#      the local provider mirror (the Atlas module and stack need mongodb/mongodbatlas, which
#      is not there, and are skipped by name);
#   3. checkov over terraform/ with no failed checks (skips are inline, each with its reason);
#   4. terraform plan of the AWS stack for dev, staging and prod against a moto server.
#
#   scripts/terraform_check.sh
#
# Needs terraform on the PATH (the registry is unreachable here, so it is not installed) and
# a filesystem mirror of hashicorp/aws: $CALLPIPE_TF_MIRROR, else found under the usual roots.
# checkov and moto are installed with pip into venvs under ~/.cache/callpipe. Nothing is written
# to the source tree: every terraform run works on a temporary copy.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$CALLPIPE_ROOT"

CHECKOV_VERSION="3.3.30"
MOTO_VERSION="5.2.5"
TOOLS_DIR="$HOME/.cache/callpipe"
started=$SECONDS

step() { echo "== terraform: $*"; }
fail() { echo "error: $*" >&2; exit 1; }

if ! command -v terraform >/dev/null 2>&1; then
    fail "terraform is not on the PATH. It cannot be installed here (the HashiCorp registry and releases site are unreachable); install terraform >= 1.5 and rerun."
fi
echo "terraform: $(TF_CLI_CONFIG_FILE=/dev/null terraform version | head -n 1)"

# The provider mirror: a directory laid out as registry.terraform.io/hashicorp/aws/VERSION/OS_ARCH.
find_mirror() {
    local candidates=(
        "${CALLPIPE_TF_MIRROR:-}"
        /opt/tf-plugins
        /usr/share/terraform/plugins
        /usr/local/share/terraform/plugins
        "$HOME/.terraform.d/plugins"
        "$HOME/.local/share/terraform/plugins"
    )
    local dir
    for dir in "${candidates[@]}"; do
        [ -n "$dir" ] && [ -d "$dir/registry.terraform.io/hashicorp/aws" ] && { echo "$dir"; return 0; }
    done
    while IFS= read -r dir; do
        [ -d "$dir/registry.terraform.io/hashicorp/aws" ] && { echo "$dir"; return 0; }
    done < <(find / -maxdepth 3 -type d -name tf-plugins 2>/dev/null)
    return 1
}
MIRROR="$(find_mirror)" \
    || fail "no terraform provider mirror with hashicorp/aws found (set CALLPIPE_TF_MIRROR to a directory holding registry.terraform.io/hashicorp/aws/VERSION/OS_ARCH)"
echo "provider mirror: $MIRROR ($(cd "$MIRROR/registry.terraform.io" && echo */* | tr ' ' ','))"

WORK="$(mktemp -d)"
MOTO_PID=""
cleanup() {
    [ -n "$MOTO_PID" ] && kill "$MOTO_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Providers come only from the mirror; the plugin cache links them instead of copying the
# 700 MB aws provider into every working directory.
mkdir -p "$TOOLS_DIR/tf-plugin-cache"
cat > "$WORK/terraformrc" <<EOF
plugin_cache_dir = "$TOOLS_DIR/tf-plugin-cache"
provider_installation {
  filesystem_mirror {
    path = "$MIRROR"
  }
}
EOF
export TF_CLI_CONFIG_FILE="$WORK/terraformrc"
export TF_IN_AUTOMATION=1
export CHECKPOINT_DISABLE=1
cp -r terraform environments "$WORK/"

step "fmt -check"
terraform fmt -check -recursive -diff terraform environments \
    || fail "terraform fmt found unformatted files (run: terraform fmt -recursive terraform environments)"

step "init + validate"
for dir in "$WORK"/terraform/modules/* "$WORK"/terraform/stacks/*; do
    rel="terraform/${dir#"$WORK"/terraform/}"
    missing=()
    while IFS= read -r source; do
        [ -d "$MIRROR/registry.terraform.io/$source" ] || missing+=("$source")
    done < <(sed -n 's/^ *source *= *"\([a-z0-9-]*\/[a-z0-9-]*\)".*/\1/p' "$dir"/*.tf | sort -u)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "SKIPPED $rel: needs ${missing[*]}, not in the provider mirror (checked by fmt and checkov only)"
        continue
    fi
    if ! out="$(terraform -chdir="$dir" init -backend=false -input=false -no-color 2>&1)"; then
        echo "$out" >&2
        fail "terraform init failed in $rel"
    fi
    if ! out="$(terraform -chdir="$dir" validate -no-color 2>&1)"; then
        echo "$out" >&2
        fail "terraform validate failed in $rel"
    fi
    echo "ok      $rel"
done

# A venv under ~/.cache/callpipe with one pinned package; prints the venv's bin directory.
tool_venv() {
    local name="$1" requirement="$2" venv="$TOOLS_DIR/$1-venv"
    if ! "$venv/bin/python" -m pip show -q "${requirement%%[=[]*}" >/dev/null 2>&1 \
        || [ "$("$venv/bin/python" -m pip show "${requirement%%[=[]*}" 2>/dev/null | sed -n 's/^Version: //p')" != "${requirement##*==}" ]; then
        echo "installing $requirement into $venv" >&2
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            apt_install python3-venv >&2
            python3 -m venv "$venv" >&2
        fi
        "$venv/bin/python" -m pip install -q "$requirement" >&2
    fi
    echo "$venv/bin"
}

step "checkov"
CHECKOV_BIN="$(tool_venv checkov "checkov==$CHECKOV_VERSION")"
LOG_LEVEL=ERROR "$CHECKOV_BIN/checkov" -d terraform --framework terraform --skip-download --quiet --compact \
    || fail "checkov found failed checks (fix them, or skip one inline with #checkov:skip=CKV_...:reason)"

step "plan against moto (dev, staging, prod)"
MOTO_BIN="$(tool_venv moto "moto[server]==$MOTO_VERSION")"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$MOTO_BIN/moto_server" -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
python3 - "$PORT" <<'EOF' || { cat "$WORK/moto.log" >&2; fail "moto_server did not start on 127.0.0.1:$PORT"; }
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit(1)
EOF

# Test-only override: a local backend instead of S3, and every AWS API the stack uses pointed
# at moto with dummy credentials, so nothing can reach real AWS.
STACK="$WORK/terraform/stacks/callpipe"
ENDPOINT="http://127.0.0.1:$PORT"
{
    echo 'terraform {'
    echo '  backend "local" {}'
    echo '}'
    echo 'provider "aws" {'
    echo '  access_key                  = "test"'
    echo '  secret_key                  = "test"'
    echo '  skip_credentials_validation = true'
    echo '  skip_requesting_account_id  = true'
    echo '  skip_metadata_api_check     = true'
    echo '  skip_region_validation      = true'
    echo '  s3_use_path_style           = true'
    echo '  endpoints {'
    for service in applicationautoscaling autoscaling cloudwatch ec2 ecr ecs elasticache elbv2 events \
        iam kms logs opensearchserverless s3 scheduler secretsmanager sns sqs ssm sts; do
        echo "    $service = \"$ENDPOINT\""
    done
    echo '  }'
    echo '}'
} > "$STACK/override.tf"

plan_env=(env -u AWS_PROFILE -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true)
if ! out="$("${plan_env[@]}" terraform -chdir="$STACK" init -input=false -no-color 2>&1)"; then
    echo "$out" >&2
    fail "terraform init (local backend) failed in terraform/stacks/callpipe"
fi
for env_name in dev staging prod; do
    if ! out="$("${plan_env[@]}" terraform -chdir="$STACK" plan -input=false -no-color -lock=false \
        -var-file="../../../environments/$env_name/terraform.tfvars" 2>&1)"; then
        echo "$out" | tail -n 40 >&2
        fail "terraform plan of environments/$env_name failed against moto"
    fi
    echo "ok      environments/$env_name: $(echo "$out" | grep -E '^Plan: ' || echo 'no changes')"
done

echo "terraform checks passed in $((SECONDS - started)) s"
