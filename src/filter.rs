//! Target filters: `RUST_LOG`-style directives compiled into an immutable table.
//!
//! The syntax is env_logger's without its regex part (`/pattern`), which is also
//! tracing `EnvFilter`'s without span and field directives: a comma-separated list
//! of directives, each
//!
//! * `level` (`error`, `warn`, `info`, `debug`, `trace` or `off`, any case): the
//!   level of every target no other directive names; the last one given wins;
//! * `target=level`: the level of `target` and of every target it is a prefix of;
//! * `target` (or `target=`): the same at `trace`.
//!
//! Matching follows env_logger exactly: a directive's target matches a record's
//! target when it is a byte prefix of it (`my_crate` matches `my_crate::db`, and
//! also `my_crate_extra`: env_logger has no `::` boundary rule, and neither has
//! tracing's `EnvFilter`), and the longest matching target decides. The same target
//! given twice: the last one wins. Without a bare level, targets no directive names
//! are off.
//!
//! Rejected (an error naming the token): span and field directives (`[span]`,
//! `{field}`), regex filters (`/`), a level that is not one, more than one `=`,
//! whitespace inside a target, an empty target (`=info`), a filter without any
//! directive, more than [`MAX_DIRECTIVES`] directives or a target longer than
//! [`MAX_TARGET_BYTES`].
//!
//! The check a producer makes is bounded and allocation-free: the directives are
//! sorted longest target first and compared byte by byte; the first match decides.

use std::str::FromStr;

use log::{Level, LevelFilter};

/// The most directives one filter takes.
pub(crate) const MAX_DIRECTIVES: usize = 256;
/// The longest target one directive names.
pub(crate) const MAX_TARGET_BYTES: usize = 512;

/// One malformed directive: the token and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadDirective {
    pub(crate) token: String,
    pub(crate) reason: &'static str,
}

/// The compiled directives, immutable once built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    /// Target prefixes and their levels, longest target first.
    targets: Box<[(Box<str>, LevelFilter)]>,
    /// The level of targets no directive names.
    default: LevelFilter,
    /// The most verbose level any directive enables.
    max: LevelFilter,
}

impl Filter {
    /// Every target at `level`: what [`crate::QueueConfig::level`] means alone.
    pub(crate) fn level(level: LevelFilter) -> Filter {
        Filter {
            targets: Box::new([]),
            default: level,
            max: level,
        }
    }

    /// Parses `spec` strictly: the first malformed directive is the error.
    pub(crate) fn parse(spec: &str) -> Result<Filter, BadDirective> {
        let (filter, mut bad) = Filter::parse_lenient(spec);
        match (bad.is_empty(), filter) {
            (true, Some(filter)) => Ok(filter),
            (true, None) => Err(BadDirective {
                token: spec.to_owned(),
                reason: "the filter has no directive",
            }),
            (false, _) => Err(bad.swap_remove(0)),
        }
    }

    /// Parses `spec`, skipping malformed directives: the filter of the good ones
    /// (`None` if there are none), and the bad ones in order.
    pub(crate) fn parse_lenient(spec: &str) -> (Option<Filter>, Vec<BadDirective>) {
        let mut bad = Vec::new();
        let mut default = None;
        let mut targets: Vec<(Box<str>, LevelFilter)> = Vec::new();
        let mut any = false;
        for token in spec.split(',').map(str::trim) {
            if token.is_empty() {
                continue;
            }
            if targets.len() >= MAX_DIRECTIVES {
                bad.push(BadDirective {
                    token: token.to_owned(),
                    reason: "more than 256 directives",
                });
                continue;
            }
            match directive(token) {
                Ok((None, level)) => {
                    default = Some(level);
                    any = true;
                }
                Ok((Some(target), level)) => {
                    any = true;
                    match targets.iter_mut().find(|(t, _)| **t == *target) {
                        Some(existing) => existing.1 = level,
                        None => targets.push((target.into(), level)),
                    }
                }
                Err(reason) => bad.push(BadDirective {
                    token: token.to_owned(),
                    reason,
                }),
            }
        }
        if !any {
            return (None, bad);
        }
        // Longest first; two different targets of one length never both match.
        targets.sort_by_key(|t| std::cmp::Reverse(t.0.len()));
        let default = default.unwrap_or(LevelFilter::Off);
        let max = targets
            .iter()
            .map(|(_, level)| *level)
            .fold(default, Ord::max);
        let filter = Filter {
            targets: targets.into_boxed_slice(),
            default,
            max,
        };
        (Some(filter), bad)
    }

    /// The most verbose level any directive enables.
    pub(crate) fn max(&self) -> LevelFilter {
        self.max
    }

    /// The level `target` is filtered at. Bounded, allocation-free, cannot panic.
    pub(crate) fn level_of(&self, target: &str) -> LevelFilter {
        let target = target.as_bytes();
        for (prefix, level) in self.targets.iter() {
            if target.starts_with(prefix.as_bytes()) {
                return *level;
            }
        }
        self.default
    }

    /// Whether a record of `level` for `target` passes.
    #[inline]
    pub(crate) fn enabled(&self, level: Level, target: &str) -> bool {
        level <= self.max && (self.targets.is_empty() || level <= self.level_of(target))
    }
}

/// One trimmed, non-empty directive: its target (`None`: the default) and level.
fn directive(token: &str) -> Result<(Option<&str>, LevelFilter), &'static str> {
    if token.contains(['[', ']', '{', '}']) {
        return Err("span and field directives ([span], {field}) are not supported");
    }
    if token.contains('/') {
        return Err("regex filters (/pattern) are not supported");
    }
    let mut parts = token.split('=');
    let name = parts.next().unwrap_or_default();
    let level = parts.next().map(str::trim);
    if parts.next().is_some() {
        return Err("more than one '=' in a directive");
    }
    let (name, level) = match level {
        None => match LevelFilter::from_str(name) {
            Ok(level) => return Ok((None, level)),
            Err(_) => (name, LevelFilter::Trace),
        },
        Some("") => (name, LevelFilter::Trace),
        Some(level) => match LevelFilter::from_str(level) {
            Ok(level) => (name, level),
            Err(_) => {
                return Err("not a level (off, error, warn, info, debug or trace)");
            }
        },
    };
    if name.is_empty() {
        return Err("empty target before '='");
    }
    if name.chars().any(char::is_whitespace) {
        return Err("whitespace inside a target");
    }
    if name.len() > MAX_TARGET_BYTES {
        return Err("a target longer than 512 bytes");
    }
    Ok((Some(name), level))
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level::*;

    fn on(filter: &str, level: Level, target: &str) -> bool {
        Filter::parse(filter).unwrap().enabled(level, target)
    }

    #[test]
    fn longest_target_wins_either_order() {
        for spec in [
            "info,my_crate=debug,my_crate::db=trace",
            "my_crate::db=trace,my_crate=debug,info",
        ] {
            assert!(on(spec, Trace, "my_crate::db::pool"), "{spec}");
            assert!(on(spec, Debug, "my_crate::web"), "{spec}");
            assert!(!on(spec, Trace, "my_crate::web"), "{spec}");
            assert!(on(spec, Info, "other"), "{spec}");
            assert!(!on(spec, Debug, "other"), "{spec}");
        }
    }

    #[test]
    fn bare_target_is_trace_and_off_is_off() {
        assert!(on("my_crate", Trace, "my_crate::x"));
        assert!(!on("my_crate", Error, "other"));
        assert!(on("my_crate=", Trace, "my_crate"));
        assert!(!on("trace,noisy=off", Error, "noisy::inner"));
        assert!(on("trace,noisy=off", Trace, "quiet"));
        assert!(!on("off", Error, "x"));
        assert_eq!(Filter::parse("off").unwrap().max(), LevelFilter::Off);
        assert_eq!(
            Filter::parse("warn,a=debug").unwrap().max(),
            LevelFilter::Debug
        );
    }

    #[test]
    fn last_of_a_target_or_default_wins() {
        assert!(!on("a=trace,a=warn", Info, "a"));
        assert!(on("error,info", Info, "x"));
        assert!(on("INFO,A=Debug", Debug, "A"));
    }

    #[test]
    fn prefixes_are_bytes_as_in_env_logger() {
        assert!(on("warn,my_crate=debug", Debug, "my_crate::db"));
        assert!(on("warn,my_crate=debug", Debug, "my_crate"));
        assert!(on("warn,my_crate=debug", Debug, "my_crate_extra"));
        assert!(!on("warn,my_crate::db=debug", Debug, "my_crate"));
        assert!(!on("warn,my_crate::db=debug", Debug, "my_crate::d"));
    }

    #[test]
    fn errors_name_the_token() {
        for (spec, token) in [
            ("info,a=loud", "a=loud"),
            ("a[span]=info", "a[span]=info"),
            ("a{f=1}=info", "a{f=1}=info"),
            ("info/foo", "info/foo"),
            ("a=b=c", "a=b=c"),
            ("=info", "=info"),
            ("a b=info", "a b=info"),
            (" , ", " , "),
        ] {
            let bad = Filter::parse(spec).unwrap_err();
            assert_eq!(bad.token, token, "{spec}: {bad:?}");
        }
    }

    #[test]
    fn lenient_keeps_the_good_directives() {
        let (filter, bad) = Filter::parse_lenient("warn,a=loud,b=debug,c[x]");
        let filter = filter.unwrap();
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[0].token, "a=loud");
        assert_eq!(bad[1].token, "c[x]");
        assert!(filter.enabled(Debug, "b"));
        assert!(!filter.enabled(Info, "a"));
    }

    #[test]
    fn too_many_directives_are_refused() {
        let spec: Vec<String> = (0..300).map(|i| format!("t{i}=info")).collect();
        let bad = Filter::parse(&spec.join(",")).unwrap_err();
        assert_eq!(bad.token, "t256=info");
    }
}
