//! Starts the server: `server eval|train` for the labelled data, `server
//! keys` for virtual keys, else
//! flags, [`server::start::build`], serve until Ctrl-C or SIGTERM.

/// mimalloc: requests allocate on one thread and the store's writer frees
/// on another; glibc's arenas serialise those frees on a lock, mimalloc
/// hands them back without one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use server::config::Config;
use server::start;

fn main() {
    // Transparent huge pages off for this process, before anything is
    // allocated: mimalloc's arenas would otherwise be backed by 2 MiB pages
    // wherever the system enables them for all (`always`), and memory
    // touched a few KiB at a time (an idle event stream's buffers) would
    // cost whole huge pages: 10,000 idle streams took 28.7 KiB each and a
    // 39 MiB start instead of 16.2 KiB and 25 MiB (docs/performance.md).
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the async runtime starts")
        .block_on(run());
}

async fn run() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = server::eval::run(&args).or_else(|| server::keys::run(&args)) {
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
