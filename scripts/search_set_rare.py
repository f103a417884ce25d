#!/usr/bin/env python3
"""Fits the rare-term queries of the search set (tests/fixtures/search) to its transcripts.

A rare-term query measures search, not speech recognition: a name the model did not write can be
found by no search. So, after scripts/make_search_set.sh has transcribed the calls:

1. each rare-term query keeps only the relevant turns whose transcript holds all its words (a
   word matches itself, a form differing by a final `s`, or, from 4 letters, a longer word it
   starts); a query left with none is dropped;
2. for each call, up to two proper nouns (capitalised inside a sentence in the script) that the
   script and the transcript both hold in that call alone become new rare-term queries
   (`<topic>-rNN`), judged on the turns holding them in both.

    scripts/search_set_rare.py            # prints what it would do
    scripts/search_set_rare.py --apply    # rewrites queries/*.json
"""
import collections, glob, json, os, re, sys

S = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "search")
apply = "--apply" in sys.argv


def words(t):
    return re.findall(r"[a-z0-9']+", t.lower())


scripts = {os.path.basename(f)[:-5]: json.load(open(f)) for f in glob.glob(S + "/scripts/*.json")}
trans = {n: json.load(open(S + "/transcripts/" + n + ".json")) for n in scripts}
truth = {n: json.load(open(S + "/truth/" + n + ".json")) for n in scripts}


def seg_text(call, turn):
    """The transcript text on the turn's channel that overlaps it."""
    t = truth[call]["turns"][turn]
    out = []
    for ch in trans[call]["channels"]:
        if ch["channel"] != t["channel"]:
            continue
        for s in ch["segments"]:
            if min(s["end_s"], t["end_s"]) - max(s["start_s"], t["start_s"]) > 0.2:
                out.append(s["text"])
    return " ".join(out)


def has(asr, w):
    return any(a == w or (len(w) >= 4 and a.startswith(w)) or a.rstrip("s") == w.rstrip("s") for a in asr)


# Step 1.
kept = dropped = 0
for f in sorted(glob.glob(S + "/queries/*.json")):
    qs = json.load(open(f))
    out = []
    for q in qs:
        if q["kind"] == "rare" and not q["id"].startswith("real-"):
            qw = words(q["query"])
            rel = []
            for j in q["relevant"]:
                if j["call"] not in scripts:
                    rel.append(j)
                    continue
                ts = [t for t in j["turns"] if all(has(words(seg_text(j["call"], t)), w) for w in qw)]
                if ts:
                    rel.append({"call": j["call"], "turns": ts})
            if not rel:
                dropped += 1
                print("drop", q["id"], repr(q["query"]))
                continue
            q["relevant"] = rel
            kept += 1
        out.append(q)
    if apply:
        with open(f, "w") as fh:
            json.dump(out, fh, indent=2)
            fh.write("\n")
print("rare queries kept", kept, "dropped", dropped)

# Step 2.
script_calls=collections.defaultdict(set); asr_calls=collections.defaultdict(set); caps=set()
for n,sc in scripts.items():
    for role,text in sc['turns']:
        for w in words(text): script_calls[w].add(n)
        for w in re.findall(r"(?<![.?!] )\b[A-Z][a-z]{3,}", text): caps.add(w.lower())
    for ch in trans[n]['channels']:
        for s in ch['segments']:
            for w in words(s['text']): asr_calls[w].add(n)
existing=set()
for f in glob.glob(S+'/queries/*.json'):
    for q in json.load(open(f)):
        if q['kind']=='rare': existing.update(words(q['query']))
# Calls that already have generated queries are left as they are, so a rerun adds nothing.
done=set()
for f in glob.glob(S+'/queries/*.json'):
    for q in json.load(open(f)):
        if re.search(r'-r[0-9]+$', q['id']): done.update(j['call'] for j in q['relevant'])
# Words that are capitalised only as a sentence opener or a greeting, not names.
NOT_NAMES={'absolutely','hello','battery','plugging','september','december','refunds','music','charlie','thanksgiving'}
new=collections.defaultdict(list)
for n in sorted(scripts):
    if n in done: continue
    cands=[]
    for w,calls in script_calls.items():
        if calls!={n} or asr_calls.get(w)!={n} or len(w)<5 or w in existing or w.isdigit(): continue
        turns=[i for i,(r,t) in enumerate(scripts[n]['turns']) if w in words(t) and w in words(seg_text(n,i))]
        if not turns: continue
        if w not in caps or w in NOT_NAMES: continue
        cands.append((w in caps, len(w), w, turns))
    cands.sort(reverse=True)
    topic=n.split('_')[1].split('-')[0]
    split='holdout' if n.startswith(('2025-10','2025-11','2025-12')) else 'tune'
    for c in cands[:2]:
        new[topic].append({'kind':'rare','query':c[2],'relevant':[{'call':n,'turns':c[3]}],'split':split})
        print('add', topic, n, repr(c[2]), c[3])
if apply:
    for topic, qs in new.items():
        f=S+f'/queries/{topic}.json'; old=json.load(open(f))
        start=sum(1 for q in old if q['id'].startswith(f'{topic}-r'))
        for i,q in enumerate(qs): q['id']=f'{topic}-r{start+i+1:02d}'; old.append({k:q[k] for k in ['id','kind','query','relevant','split']})
        with open(f,'w') as fh: json.dump(old, fh, indent=2); fh.write('\n')
