use clap::error::ErrorKind;
use clap::Parser;

fn main() {
    let cli = match netstack_lat::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            // One line, whatever clap would add (tips, usage): bad input must read at a glance.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("netstack-lat: error: {first} (see --help)");
            std::process::exit(2);
        }
    };
    if let Err(e) = netstack_lat::run(cli) {
        let code = netstack_lat::error::exit_code(&e);
        let msg = netstack_lat::error::message(&e);
        eprintln!("netstack-lat: error: {msg}");
        std::process::exit(code);
    }
}
