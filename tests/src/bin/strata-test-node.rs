//! The node the multi-process harness starts: `strata-node`'s very `main`.

fn main() -> std::process::ExitCode {
    strata::server::process::main()
}
