//! Text beside JSON lines, a filter in code, and `RUST_LOG` overriding it: the knobs a
//! service sets on day one.
//!
//! ```text
//! cargo run --release --example formats
//! ```
//!
//! It runs itself twice: once as configured in code (`info,app::db=debug`), once with
//! `RUST_LOG=warn,app::db=trace` set by the operator, and prints what each output got.

use std::path::Path;
use std::process::Command;

use quelog::{Builder, Format, Output};

const CHILD: &str = "QUELOG_FORMATS_CHILD";

fn child(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let guard = Builder::new()
        .filter("info,app::db=debug")
        .output(Output::file(dir.join("app.log")))
        .output(Output::file(dir.join("app.json")).format(Format::Json))
        .install()?;
    let span = tracing::info_span!("request", id = 7);
    let _entered = span.enter();
    log::info!(target: "app::http", user = "ann", attempts = 3; "login");
    log::debug!(target: "app::http", "a debug line the code's filter drops");
    log::debug!(target: "app::db", "query took {} ms", 4);
    log::trace!(target: "app::db", "a trace line only RUST_LOG lets through");
    tracing::warn!(target: "app::db", rows = 12_u64, slow = true, "query \"slow\"");
    guard.stop()?;
    Ok(())
}

fn show(dir: &Path, title: &str) -> Result<(), Box<dyn std::error::Error>> {
    println!("== {title}");
    for name in ["app.log", "app.json"] {
        let text = std::fs::read_to_string(dir.join(name))?;
        println!("-- {name}");
        for line in text.lines() {
            println!("{line}");
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = std::env::var_os(CHILD) {
        return child(Path::new(&dir));
    }
    let root = std::env::temp_dir().join(format!("quelog-formats-{}", std::process::id()));
    let exe = std::env::current_exe()?;
    for (name, rust_log) in [("in code", None), ("RUST_LOG", Some("warn,app::db=trace"))] {
        let dir = root.join(name.replace(' ', "-"));
        std::fs::create_dir_all(&dir)?;
        let mut command = Command::new(&exe);
        command.env(CHILD, &dir).env_remove("RUST_LOG");
        if let Some(value) = rust_log {
            command.env("RUST_LOG", value);
        }
        let status = command.status()?;
        if !status.success() {
            return Err(format!("the {name} run failed: {status}").into());
        }
        let title = match rust_log {
            Some(value) => format!("with RUST_LOG={value} (replaces the code's filter)"),
            None => "as configured in code: filter(\"info,app::db=debug\")".to_owned(),
        };
        show(&dir, &title)?;
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
