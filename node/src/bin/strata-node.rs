//! `strata-node`: the Strata server.
//!
//! Everything it does is in [`strata::server::process`] (flags, start, the address line on
//! stdout, shutdown on SIGTERM, SIGINT or, with `--stop-when-stdin-closes`, when its parent
//! goes away), so that other programs can run the very same node.

fn main() -> std::process::ExitCode {
    strata::server::process::main()
}
