//! Outputs: where a sink writes, in which format, at which level. One shape for every
//! destination ([`Output::file`], [`Output::stderr`], [`Output::stdout`],
//! [`Output::sink`]), given to [`crate::Builder::output`] or
//! [`crate::QueueListener::start_outputs`].

use std::fmt;
use std::path::PathBuf;

use log::LevelFilter;

use crate::error::Error;
use crate::layout::{JsonStyle, LayoutSpec};
use crate::sink::rotation::RotatingFileSink;
use crate::sink::{FileSink, Rotation, Sink, StderrSink, StdoutSink};
use crate::stats::Counters;

/// How an output's lines look.
///
/// * `Text` (the default): `2026-11-22T04:14:35.123456Z  INFO [worker-1/4242]
///   app::db: connected peer="10.0.0.7"`.
/// * `Json`: one JSON object per line, keys `timestamp` (RFC 3339, microseconds, UTC
///   with `Z`), `level` (`ERROR` .. `TRACE`), `message`, `target`, `thread` (the
///   thread's name, absent if it has none), `thread_id`, then the record's typed
///   fields at the top level with their JSON types, then `spans` (the span chain,
///   outermost first: `[{"name":"request","id":7}]`). A field named like one of
///   those keys is written as `fields.<name>`, never overwriting. `file` and `line`
///   with [`Output::source_location`].
/// * `JsonEcs`: the same with Elastic Common Schema keys, which Elasticsearch,
///   Filebeat and Kibana read as they are: `@timestamp`, `log.level`, `message`,
///   `ecs.version` (`"1.6.0"`), `log.logger` (the target), `process.thread.name`,
///   `process.thread.id`, `log.origin.file.name`/`log.origin.file.line`.
/// * `JsonGcp`: Google Cloud Logging's structured payload (what its agents and Cloud
///   Run read from standard output): `time`, `severity` (`WARNING` for warn, `DEBUG`
///   for debug and trace), `message`, `logging.googleapis.com/sourceLocation` (`{"file":
///   ..., "line": "42"}`), and `target`, `thread`, `thread_id` as in `Json`.
///
/// The lines written without the listener, by the fatal-signal drain
/// ([`crate::Builder::drain_on_crash`]) and in a child forked after install, are
/// text: they go to the first text file output, or (with JSON file outputs only) to
/// the first JSON one, where they are the lines a JSON parser rejects.
///
/// What shippers make of the default `Json` without configuration:
///
/// * **Vector**: its `parse_json` (or a `json` decoding codec) keeps every key;
///   `timestamp` and `message` are its log schema's default timestamp and message
///   keys, so they land where Vector's own events put them. `level` is a field.
/// * **Fluent Bit**: the `json` parser maps every key; its stock `json` parser takes
///   the record time from `time`, not `timestamp`: set `Time_Key timestamp` and
///   `Time_Format %Y-%m-%dT%H:%M:%S.%LZ`, or use `JsonGcp` (whose key is `time`).
/// * **Loki** (Promtail or Alloy with a `json` stage, or LogQL's `| json`): every key
///   is extracted; `level` is the key Grafana reads for the level (and colours by),
///   and a `timestamp` stage with `source: timestamp, format: RFC3339Nano` sets the
///   entry time.
///
/// ```
/// use quelog::{Builder, Format, Output};
///
/// let builder = Builder::new().output(Output::stdout().format(Format::Json));
/// # drop(builder);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Format {
    /// One line of text per record (the default).
    #[default]
    Text,
    /// JSON lines with quelog's keys.
    Json,
    /// JSON lines with Elastic Common Schema keys.
    JsonEcs,
    /// JSON lines with Google Cloud Logging's keys.
    JsonGcp,
}

/// Where an output writes.
enum Destination {
    File(PathBuf, Option<Rotation>),
    Stderr,
    Stdout,
    Sink(Box<dyn Sink>),
}

/// One output: a destination, its format and its level.
///
/// The everyday set-ups, one line each:
///
/// ```no_run
/// use quelog::{Builder, Format, LevelFilter, Output};
///
/// // A text file.
/// # let _ =
/// Builder::new().file("logs/app.log");
/// // A JSON file.
/// # let _ =
/// Builder::new().output(Output::file("logs/app.json").format(Format::Json));
/// // JSON on standard output (containers).
/// # let _ =
/// Builder::new().output(Output::stdout().format(Format::Json));
/// // Text on standard error at warn, beside a JSON file at debug.
/// # let _ =
/// Builder::new().level(LevelFilter::Debug).stderr(LevelFilter::Warn).output(Output::file("logs/app.json").format(Format::Json));
/// ```
///
/// An output's level narrows the builder's: a record must pass [`crate::Builder::level`]
/// to be queued at all, then each output's level to be written there.
pub struct Output {
    destination: Destination,
    format: Format,
    level: Option<LevelFilter>,
    source_location: bool,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let destination = match &self.destination {
            Destination::File(path, None) => format!("file {}", path.display()),
            Destination::File(path, Some(rotation)) => {
                format!("file {} rotating {rotation:?}", path.display())
            }
            Destination::Stderr => "stderr".to_owned(),
            Destination::Stdout => "stdout".to_owned(),
            Destination::Sink(_) => "custom sink".to_owned(),
        };
        f.debug_struct("Output")
            .field("destination", &destination)
            .field("format", &self.format)
            .field("level", &self.level)
            .field("source_location", &self.source_location)
            .finish()
    }
}

impl Output {
    /// Whether this output is standard error (quelog's own warnings need not be
    /// printed there a second time).
    pub(crate) fn is_stderr(&self) -> bool {
        matches!(self.destination, Destination::Stderr)
    }

    fn new(destination: Destination) -> Output {
        Output {
            destination,
            format: Format::Text,
            level: None,
            source_location: false,
        }
    }

    /// Appends to the file at `path` (created with its parent directories).
    pub fn file(path: impl Into<PathBuf>) -> Output {
        Output::new(Destination::File(path.into(), None))
    }

    /// Rotates the file as `rotation` says (a file output only; elsewhere it does
    /// nothing). The live file keeps `path`; see [`Rotation`] and [`crate::Naming`].
    ///
    /// ```no_run
    /// use quelog::{Builder, Output, Rotation};
    ///
    /// // A new file every 64 MiB, the 10 newest rotated ones kept.
    /// # let _ =
    /// Builder::new().output(Output::file("logs/app.log").rotate(Rotation::size(64 << 20).keep(10)));
    /// ```
    pub fn rotate(mut self, rotation: Rotation) -> Output {
        if let Destination::File(_, slot) = &mut self.destination {
            *slot = Some(rotation);
        }
        self
    }

    /// Standard error ([`StderrSink`]).
    pub fn stderr() -> Output {
        Output::new(Destination::Stderr)
    }

    /// Standard output ([`StdoutSink`]).
    pub fn stdout() -> Output {
        Output::new(Destination::Stdout)
    }

    /// A sink of your own.
    pub fn sink(sink: impl Sink + 'static) -> Output {
        Output::new(Destination::Sink(Box::new(sink)))
    }

    /// The format of its lines (default [`Format::Text`]).
    pub fn format(mut self, format: Format) -> Output {
        self.format = format;
        self
    }

    /// Only records at `level` or more severe (default: the builder's level).
    pub fn level(mut self, level: LevelFilter) -> Output {
        self.level = Some(level);
        self
    }

    /// Also write the record's source file and line (JSON formats; default off). Text
    /// lines do not carry them.
    pub fn source_location(mut self, on: bool) -> Output {
        self.source_location = on;
        self
    }

    /// The layout this output's lines take.
    pub(crate) fn layout(&self, local_time: bool) -> LayoutSpec {
        let json = |style| LayoutSpec::Json {
            style,
            source: self.source_location,
        };
        match self.format {
            Format::Text => LayoutSpec::Text { local_time },
            Format::Json => json(JsonStyle::Plain),
            Format::JsonEcs => json(JsonStyle::Ecs),
            Format::JsonGcp => json(JsonStyle::Gcp),
        }
    }

    /// Its level, `default` if it has none of its own.
    pub(crate) fn level_or(&self, default: LevelFilter) -> LevelFilter {
        self.level.unwrap_or(default)
    }

    /// Opens the destination; `local_time` is the builder's (rotation follows it
    /// unless told otherwise), `counters` the queue's.
    pub(crate) fn open(
        self,
        local_time: bool,
        counters: &Counters,
    ) -> Result<Box<dyn Sink>, Error> {
        Ok(match self.destination {
            Destination::File(path, None) => Box::new(FileSink::open(path)?),
            Destination::File(path, Some(rotation)) => {
                let counters = std::sync::Arc::clone(&counters.rotation);
                Box::new(RotatingFileSink::open(
                    path, rotation, local_time, counters,
                )?)
            }
            Destination::Stderr => Box::new(StderrSink::new()),
            Destination::Stdout => Box::new(StdoutSink::new()),
            Destination::Sink(sink) => sink,
        })
    }
}
