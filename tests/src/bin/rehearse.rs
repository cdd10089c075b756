//! Blue/green cut-over rehearsal under load (see `eq_tests::rehearsal` for what it does and
//! checks; `scripts/rehearse-blue-green.sh` builds and runs it). Prints a report; exit code
//! 0 on PASS, 1 on FAIL, 2 on bad arguments.

#[tokio::main]
async fn main() {
    let options = match eq_tests::rehearsal::Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(usage) => {
            let help = std::env::args().any(|a| a == "--help" || a == "-h");
            if help {
                println!("{usage}");
                std::process::exit(0);
            }
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let outcome = eq_tests::rehearsal::run(options).await;
    println!("{}", outcome.report);
    std::process::exit(if outcome.pass { 0 } else { 1 });
}
