use clap::Parser;

fn main() {
    let cli = netstack_lat::cli::Cli::parse();
    if let Err(e) = netstack_lat::run(cli) {
        let code = netstack_lat::error::exit_code(&e);
        let msg = netstack_lat::error::message(&e);
        eprintln!("netstack-lat: error: {msg}");
        std::process::exit(code);
    }
}
