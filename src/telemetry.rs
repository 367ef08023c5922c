//! Logging set-up: `RUST_LOG` filter (default `info`), text or JSON lines on stderr. The
//! filter can be replaced at run time ([`LogFilter`], `PUT /debug/log-filter` on the admin
//! port).

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// Installs the global subscriber and returns the handle of its filter. Safe to call once per
/// process; later calls install nothing and return the first call's handle.
pub fn init(format: LogFormat) -> LogFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let output = match format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(true)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .with_target(true)
            .boxed(),
    };
    let mine = LogFilter { handle };
    if tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok()
    {
        let _ = INSTALLED.set(mine.clone());
    }
    INSTALLED.get().cloned().unwrap_or(mine)
}

/// The filter of the subscriber [`init`] installed, if it did: the subscriber is global to
/// the process, so is the handle (the admin server reads it here rather than through every
/// `start` signature).
pub fn installed_filter() -> Option<LogFilter> {
    INSTALLED.get().cloned()
}

static INSTALLED: OnceLock<LogFilter> = OnceLock::new();

/// Longest filter accepted at run time; a real one is a few dozen bytes.
const MAX_FILTER_BYTES: usize = 4096;

/// The log filter, replaceable without a restart.
#[derive(Clone)]
pub struct LogFilter {
    handle: reload::Handle<EnvFilter, Registry>,
}

/// Why a new filter was refused; the old one stays.
#[derive(Debug, thiserror::Error)]
pub enum LogFilterError {
    #[error("the filter is empty")]
    Empty,
    #[error("the filter is longer than {MAX_FILTER_BYTES} bytes")]
    TooLong,
    #[error("invalid filter: {0}")]
    Parse(#[from] tracing_subscriber::filter::ParseError),
    #[error("cannot replace the filter: {0}")]
    Reload(#[from] reload::Error),
}

impl LogFilter {
    /// The filter in force, in `RUST_LOG` syntax.
    pub fn current(&self) -> String {
        self.handle
            .with_current(|f| f.to_string())
            .unwrap_or_default()
    }

    /// Replaces the filter with `directives` (`RUST_LOG` syntax, e.g.
    /// `info,tenant_authz::decision=debug`); on any error the old filter stays.
    pub fn set(&self, directives: &str) -> Result<(), LogFilterError> {
        let filter = parse(directives)?;
        self.handle.reload(filter)?;
        Ok(())
    }
}

/// Parses `RUST_LOG` syntax strictly: a directive that does not parse is an error (not
/// skipped, as `RUST_LOG` does at start-up).
pub fn parse(directives: &str) -> Result<EnvFilter, LogFilterError> {
    let directives = directives.trim();
    if directives.is_empty() {
        return Err(LogFilterError::Empty);
    }
    if directives.len() > MAX_FILTER_BYTES {
        return Err(LogFilterError::TooLong);
    }
    Ok(EnvFilter::builder().parse(directives)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_strictly() {
        assert!(parse("info,tenant_authz::decision=debug").is_ok());
        assert!(matches!(parse("  "), Err(LogFilterError::Empty)));
        assert!(matches!(
            parse("info,tenant_authz=loud"),
            Err(LogFilterError::Parse(_))
        ));
        assert!(matches!(
            parse(&"a".repeat(MAX_FILTER_BYTES + 1)),
            Err(LogFilterError::TooLong)
        ));
    }

    #[test]
    fn a_reload_changes_the_filter_and_a_bad_one_keeps_it() {
        let (_layer, handle) = reload::Layer::<EnvFilter, Registry>::new(EnvFilter::new("info"));
        let f = LogFilter { handle };
        f.set("warn,tenant_authz=debug").unwrap();
        let now = f.current();
        assert!(now.contains("tenant_authz=debug"), "{now}");
        assert!(f.set("info,=[").is_err());
        assert_eq!(f.current(), now);
    }
}
