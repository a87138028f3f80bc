//! JSON lines beside text: the same records as text on standard error (warnings and
//! up), as JSON lines in `logs/json-demo.json`, and as Elastic ECS JSON on standard
//! output.
//!
//! ```text
//! cargo run --example json
//! ```

use quelog::{Builder, Format, LevelFilter, Output};

fn main() -> Result<(), quelog::Error> {
    let path = "logs/json-demo.json";
    let _ = std::fs::remove_file(path);
    let guard = Builder::new()
        .level(LevelFilter::Debug)
        .stderr(LevelFilter::Warn)
        .output(
            Output::file(path)
                .format(Format::Json)
                .source_location(true),
        )
        .output(Output::stdout().format(Format::JsonEcs))
        .install()?;
    log::info!("started with {} workers", 4);
    let request = tracing::info_span!("request", id = 7u64, path = "/users");
    let _entered = request.enter();
    tracing::debug!(rows = 3, cached = false, ms = 1.25, "query \"users\" done");
    tracing::warn!(user = "ann", attempts = 3, "login refused");
    drop(_entered);
    guard.stop()?;
    println!("--- {path}:");
    print!("{}", std::fs::read_to_string(path).unwrap_or_default());
    Ok(())
}
