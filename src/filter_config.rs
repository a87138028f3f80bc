//! [`Builder::filter`] and [`Builder::env_var`]: which filter a queue gets, from the
//! code, the environment (`RUST_LOG`) or the level alone.

use log::LevelFilter;

use crate::filter::{BadDirective, Filter};
use crate::{Builder, Error};

impl Builder {
    /// Which targets log at which level, as `RUST_LOG` says it:
    /// `"info,my_crate=debug,my_crate::db=trace"`.
    ///
    /// Comma-separated directives, each a bare level (the level of every target no
    /// other directive names; `off` included), `target=level`, or a bare `target`
    /// (meaning `trace`). A target applies to every target it is a byte prefix of, as
    /// in env_logger (`my_crate` covers `my_crate::db`, and `my_crate_extra` too), and
    /// the longest matching target wins; without a bare level, targets no directive
    /// names are off. This replaces [`Builder::level`].
    ///
    /// Span and field directives (tracing `EnvFilter`'s `target[span{field=value}]`)
    /// and env_logger's regex filters (`/pattern`) are not supported: they are an
    /// error, like any other malformed directive ([`Error::InvalidFilter`], naming
    /// the directive and why, from [`Builder::build`] or [`Builder::install`]).
    ///
    /// The variable of [`Builder::env_var`] (`RUST_LOG` by default), when set and not
    /// empty, replaces this filter: the operator's override. Its malformed directives
    /// do not stop the program: they are ignored, and the first line quelog writes to
    /// every sink (and to standard error) is a warning naming them.
    ///
    /// The filter is compiled at build into an immutable table. A record at a level
    /// no directive enables costs `log`'s one atomic load (`log::max_level`, set by
    /// install to the most verbose level any directive enables); any other record a
    /// bounded, allocation-free scan of the directives, longest target first. tracing
    /// callsites are answered once each (`register_callsite`).
    pub fn filter(mut self, directives: &str) -> Builder {
        self.filter = Some(directives.to_owned());
        self
    }

    /// The environment variable whose directives replace [`Builder::filter`] when it
    /// is set and not empty (default `Some("RUST_LOG")`); `None`: none.
    pub fn env_var(mut self, name: Option<&str>) -> Builder {
        self.env_var = name.map(str::to_owned);
        self
    }
}

/// The filter of a queue and the warning its listener writes first: from the
/// variable `env_var` if set, else the code's directives, else `level` alone. A
/// malformed code directive is the error. With `has_stderr`, the warning goes to
/// standard error through that sink; without, it is printed there now too.
pub(crate) fn resolve(
    code: Option<&str>,
    level: LevelFilter,
    env_var: Option<&str>,
    has_stderr: bool,
) -> Result<(Filter, Option<String>), Error> {
    let configured = match code {
        Some(spec) => Filter::parse(spec).map_err(invalid)?,
        None => Filter::level(level),
    };
    let Some(name) = env_var else {
        return Ok((configured, None));
    };
    let Some(value) = std::env::var_os(name) else {
        return Ok((configured, None));
    };
    let (filter, warning) = match value.to_str() {
        None => (None, Some(format!("{name} is not UTF-8: ignored"))),
        Some(spec) if spec.trim().is_empty() => return Ok((configured, None)),
        Some(spec) => {
            let (filter, bad) = Filter::parse_lenient(spec);
            (filter, (!bad.is_empty()).then(|| describe(name, &bad)))
        }
    };
    let warning = match (&filter, warning) {
        (None, Some(text)) => Some(format!("{text}; using the configured filter")),
        (_, warning) => warning,
    };
    if let (Some(text), false) = (&warning, has_stderr) {
        eprintln!("quelog: WARN {text}");
    }
    Ok((filter.unwrap_or(configured), warning))
}

fn invalid(bad: BadDirective) -> Error {
    Error::InvalidFilter {
        token: bad.token,
        reason: bad.reason.to_owned(),
    }
}

/// `RUST_LOG: ignored malformed directives: "a=loud" (not a level ...), ...`
fn describe(name: &str, bad: &[BadDirective]) -> String {
    let list: Vec<String> = bad
        .iter()
        .map(|b| format!("{:?} ({})", b.token, b.reason))
        .collect();
    format!("{name}: ignored malformed directives: {}", list.join(", "))
}
