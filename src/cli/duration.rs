//! Durations as people write them on the command line: `30m`, `1s`, `1h30m`, `250ms` (the
//! `humantime` spelling). A clap value parser; a list (`1s,5s,30s`) is clap's
//! `value_delimiter = ','` over it, so that the field's type is what clap stores.

use std::time::Duration;

/// What `--help` says a duration looks like.
pub const DURATION_HELP: &str = "a duration such as 250ms, 30s, 30m, 1h30m or 7d";

/// Parses one duration (`30m`, `1h30m`, `250ms`). A clap value parser.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("invalid duration '{text}' ({error}): expected {DURATION_HELP}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("30").is_err(), "a unit is required");
        assert_eq!(parse_duration(" 5s"), Ok(Duration::from_secs(5)));
    }
}
