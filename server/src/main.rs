//! Starts the server: `server eval|train` for the labelled data, else
//! flags, [`server::start::build`], serve until Ctrl-C or SIGTERM.

/// mimalloc: requests allocate on one thread and the store's writer frees
/// on another; glibc's arenas serialise those frees on a lock, mimalloc
/// hands them back without one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use server::config::Config;
use server::start;

#[tokio::main]
async fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = server::eval::run(&args) {
        std::process::exit(code);
    }
    let config = Config::parse();
    let _flush_on_exit = start::init_logging();
    match start::build(&config).await {
        Ok(server) => server.serve(start::shutdown_signal()).await,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(err.exit_code());
        }
    }
}
