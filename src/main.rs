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
            let mut lines = msg.lines().filter(|l| !l.trim().is_empty());
            let first = lines.next().unwrap_or("invalid arguments");
            let mut first = first.strip_prefix("error: ").unwrap_or(first).to_string();
            // "required arguments were not provided:" names them on the lines after.
            if first.ends_with(':') {
                let named: Vec<&str> = lines
                    .take_while(|l| l.starts_with("  "))
                    .map(str::trim)
                    .collect();
                first = format!("{first} {}", named.join(", "));
            }
            eprintln!("netstack-lat: error: {first} (see --help)");
            std::process::exit(2);
        }
    };
    if let Err(e) = netstack_lat::run(cli) {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        let broken_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            std::process::exit(0);
        }
        let code = netstack_lat::error::exit_code(&e);
        let msg = netstack_lat::error::message(&e);
        eprintln!("netstack-lat: error: {msg}");
        std::process::exit(code);
    }
}
