//! `strata-node`: the Strata server.
//!
//! Everything it does is in [`strata::server::process`] (flags, start, the address line on
//! stdout, shutdown on SIGTERM, SIGINT or, with `--stop-when-stdin-closes`, when its parent
//! goes away), so that other programs can run the very same node.
//!
//! The node allocates with mimalloc (D164): glibc's malloc and free were 8 to 12% of a
//! node's CPU under a replicated write load, and mimalloc took a tenth off the CPU per put.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    strata::server::process::main()
}
