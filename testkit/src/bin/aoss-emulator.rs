//! The strict OpenSearch Serverless emulator as a process, for manual checks:
//! `aoss-emulator [--port N] [--visibility-delay-ms N]`. Prints its endpoint and serves until
//! killed.

use std::time::Duration;

use callpipe_testkit::{StrictAoss, StrictAossOptions};

fn main() {
    let mut options = StrictAossOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| fail(&format!("{name} needs a number")))
        };
        match arg.as_str() {
            "--port" => {
                options.port = u16::try_from(value("--port"))
                    .unwrap_or_else(|_| fail("--port must be below 65536"))
            }
            "--visibility-delay-ms" => {
                options.visibility_delay = Duration::from_millis(value("--visibility-delay-ms"))
            }
            "-h" | "--help" => {
                println!("usage: aoss-emulator [--port N] [--visibility-delay-ms N]");
                return;
            }
            other => fail(&format!("unknown argument `{other}`")),
        }
    }
    let server = StrictAoss::start(options).unwrap_or_else(|e| fail(&format!("cannot start: {e}")));
    println!("{}", server.endpoint());
    loop {
        std::thread::park();
    }
}

fn fail(message: &str) -> ! {
    eprintln!("aoss-emulator: {message}");
    std::process::exit(2);
}
