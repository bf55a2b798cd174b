//! How client verbs show things: aligned tables for people, JSON for scripts, and the
//! spellings of sizes, durations, fsync policies and durability shared by every verb.
//!
//! Everything is written through a `Write` handed in and every write's error is returned, so
//! that a closed stdout ends the command as success (see `connection::is_broken_pipe`) instead
//! of a panic in `println!`.

use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use weir_client::{Durability, Fsync, SubscriptionMode};

/// Resolves when stdout is a pipe whose reader has gone (`weir sub … | head -3` after its
/// third line). A command waiting for input of its own would otherwise notice only at its
/// next write, which may be never. Pends forever when stdout is a file or cannot be watched.
pub async fn stdout_closed() {
    use std::os::fd::AsFd;
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;
    // A duplicate of the descriptor, so that the watch never closes stdout itself. A pipe's
    // writing end reports an error condition once no reader is left.
    // `with_interest` is deprecated because an arbitrary `AsRawFd` may change or close its
    // descriptor behind the reactor's back; an `OwnedFd` can do neither, which is exactly what
    // the `unsafe` replacement asks its caller to promise, and this workspace forbids `unsafe`.
    #[allow(deprecated)]
    let watched = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|descriptor| AsyncFd::with_interest(descriptor, Interest::ERROR).ok());
    match watched {
        Some(descriptor) => {
            let _ = descriptor.ready(Interest::ERROR).await;
        }
        None => std::future::pending().await,
    }
}

/// Writes rows under a header, each column as wide as its widest cell, two spaces apart.
/// Columns whose every cell is a number are right-aligned, so digits line up.
pub fn write_table(
    output: &mut impl Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    let mut numeric = vec![!rows.is_empty(); header.len()];
    for row in rows {
        for (column, cell) in row.iter().enumerate().take(header.len()) {
            widths[column] = widths[column].max(cell.chars().count());
            numeric[column] &= !cell.is_empty() && cell.bytes().all(|byte| byte.is_ascii_digit());
        }
    }
    let header: Vec<String> = header.iter().map(|title| (*title).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate().take(widths.len()) {
            let width = widths[column];
            let last = column + 1 == widths.len();
            if column > 0 {
                line.push_str("  ");
            }
            if numeric[column] {
                line.push_str(&format!("{cell:>width$}"));
            } else if last {
                // No padding at the end of a line: trailing spaces only get in the way.
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}"));
            }
        }
        writeln!(output, "{line}")?;
    }
    Ok(())
}

/// Writes `label  value` lines with the labels aligned.
pub fn write_fields(output: &mut impl Write, fields: &[(&str, String)]) -> std::io::Result<()> {
    let width = fields
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or(0);
    for (label, value) in fields {
        writeln!(output, "{label:<width$}  {value}")?;
    }
    Ok(())
}

/// Writes one JSON value on one line.
pub fn write_json_line(output: &mut impl Write, value: &Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *output, value)?;
    writeln!(output)
}

/// Writes one JSON value indented, for a person reading a script's input.
pub fn write_json_pretty(output: &mut impl Write, value: &Value) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *output, value)?;
    writeln!(output)
}

/// Bytes as JSON: `(field, text)` when they are UTF-8, else `(field_base64, base64)`, so that
/// a script sees text as text and never a lossy copy of binary data.
pub fn json_bytes(field: &str, bytes: &[u8]) -> (String, Value) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (field.to_owned(), json!(text)),
        Err(_) => (format!("{field}_base64"), json!(BASE64.encode(bytes))),
    }
}

/// `1.5 KiB`, `12 B`: binary units, one decimal.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `7d`, `1h30m`, `250ms`: the largest units, at most two of them.
pub fn format_duration_ms(milliseconds: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
        (1, "ms"),
    ];
    if milliseconds == 0 {
        return "0ms".to_owned();
    }
    let mut rest = milliseconds;
    let mut parts = Vec::new();
    for (size, name) in UNITS {
        if rest >= size && parts.len() < 2 {
            parts.push(format!("{}{name}", rest / size));
            rest %= size;
        } else if !parts.is_empty() {
            // Units are consecutive: `1d0h5m` would mislead, so stop at the first gap.
            break;
        }
    }
    parts.concat()
}

/// An fsync policy as `--fsync` takes it: `always`, `os`, `interval:MS`.
pub fn format_fsync(fsync: Fsync) -> String {
    match fsync {
        Fsync::Always => "always".to_owned(),
        Fsync::Os => "os".to_owned(),
        Fsync::IntervalMs(milliseconds) => format!("interval:{milliseconds}"),
    }
}

/// Parses `always`, `os`, `interval:MS` or `interval(MS)` (the spelling of `weir serve`'s
/// config). A clap value parser.
pub fn parse_fsync(text: &str) -> Result<Fsync, String> {
    let text = text.trim();
    let interval = text
        .strip_prefix("interval:")
        .or_else(|| {
            text.strip_prefix("interval(")
                .and_then(|rest| rest.strip_suffix(')'))
        })
        .map(|milliseconds| milliseconds.trim().trim_end_matches("ms"));
    match (text, interval) {
        ("always", _) => Ok(Fsync::Always),
        ("os", _) => Ok(Fsync::Os),
        (_, Some(milliseconds)) => match milliseconds.parse::<u32>() {
            Ok(milliseconds) if milliseconds > 0 => Ok(Fsync::IntervalMs(milliseconds)),
            _ => Err(format!(
                "invalid fsync interval '{text}': expected interval:MS with MS ≥ 1"
            )),
        },
        _ => Err(format!(
            "invalid fsync policy '{text}': expected always, os or interval:MS"
        )),
    }
}

/// What a confirm promises, in one word.
pub fn format_durability(durability: Durability) -> &'static str {
    match durability {
        Durability::Fsynced => "fsynced",
        Durability::Os => "os",
    }
}

/// A subscription's kind as `--mode` spells it.
pub fn format_mode(mode: SubscriptionMode) -> &'static str {
    match mode {
        SubscriptionMode::Queue => "queue",
        SubscriptionMode::Stream => "stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_text_left_and_numbers_right() {
        let mut output = Vec::new();
        write_table(
            &mut output,
            &["NAME", "PARTITIONS"],
            &[
                vec!["orders".into(), "12".into()],
                vec!["a".into(), "3".into()],
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(output).unwrap(),
            "NAME    PARTITIONS\norders          12\na                3\n"
        );
    }

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(format_size(12), "12 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(5 << 30), "5.0 GiB");
        assert_eq!(format_duration_ms(604_800_000), "7d");
        assert_eq!(format_duration_ms(5_400_000), "1h30m");
        assert_eq!(format_duration_ms(86_700_000), "1d");
        assert_eq!(format_duration_ms(250), "250ms");
    }

    #[test]
    fn fsync_policies_round_trip() {
        for fsync in [Fsync::Always, Fsync::Os, Fsync::IntervalMs(10)] {
            assert_eq!(parse_fsync(&format_fsync(fsync)), Ok(fsync));
        }
        assert_eq!(parse_fsync("interval(5ms)"), Ok(Fsync::IntervalMs(5)));
        assert!(parse_fsync("interval:0").is_err());
        assert!(parse_fsync("sometimes").is_err());
    }

    #[test]
    fn binary_bytes_become_base64_and_text_stays_text() {
        assert_eq!(
            json_bytes("payload", b"hi"),
            ("payload".into(), json!("hi"))
        );
        assert_eq!(
            json_bytes("payload", &[0xff, 0x00]),
            ("payload_base64".into(), json!("/wA="))
        );
    }
}
