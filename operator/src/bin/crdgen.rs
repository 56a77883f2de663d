//! Writes the CRD YAML generated from `operator/src/crd/` into `manifests/crds/` and
//! `charts/strata-operator/crds/`.
//!
//! `crdgen` writes the files under the repository root; `crdgen --check` writes nothing and
//! exits 1 when a checked-in file differs. `--root DIR` names another root.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut check = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--root" => match args.next() {
                Some(dir) => root = PathBuf::from(dir),
                None => return usage("--root needs a directory"),
            },
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    match run(&root, check) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("crdgen: {problem}\nusage: crdgen [--check] [--root DIR]");
    ExitCode::from(2)
}

fn run(root: &std::path::Path, check: bool) -> anyhow::Result<ExitCode> {
    if check {
        let drifted = strata_operator::crd::drifted(root)?;
        for path in &drifted {
            eprintln!("crdgen: {} differs from the types", path.display());
        }
        return Ok(if drifted.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let files = strata_operator::crd::rendered()?;
    for dir in strata_operator::crd::OUTPUT_DIRS {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir)?;
        for (name, text) in &files {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
