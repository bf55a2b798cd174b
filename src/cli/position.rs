//! Positions in a topic as users write them (`--from`, `--to`), and the few date conversions
//! they need: RFC 3339 in and out, without a date library.
//!
//! A position is `earliest`, `latest`, an offset (a plain number), a time in RFC 3339
//! (`2026-01-31T09:00:00Z`, `2026-01-31T10:00:00+01:00`, or a date alone, meaning its
//! midnight UTC), or `@MS`, milliseconds since the Unix epoch. A plain number is always an
//! offset, which is why epoch milliseconds need their `@`. Conversions use the proleptic
//! Gregorian calendar (Howard Hinnant's `days_from_civil` and `civil_from_days`), exact for
//! every date a message can carry.

use weir_client::Start;

/// Milliseconds below this after `@` are surely seconds (they would mean a time in 1973):
/// refused, since reading them as milliseconds would silently replay everything.
const SMALLEST_PLAUSIBLE_EPOCH_MS: i64 = 100_000_000_000;

/// What `--from` and `--to` accept, for help texts.
pub const POSITION_HELP: &str = "earliest, latest, an offset (42), an RFC 3339 time \
(2026-01-31T09:00:00Z) or @MS (milliseconds since the Unix epoch)";

/// Parses a position (see the module documentation). Used as a clap value parser, so the
/// error is a message for the user.
pub fn parse_position(text: &str) -> Result<Start, String> {
    let text = text.trim();
    match text {
        "earliest" => return Ok(Start::Earliest),
        "latest" => return Ok(Start::Latest),
        _ => {}
    }
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Start::Offset)
            .map_err(|_| format!("the offset '{text}' is too large"));
    }
    if let Some(milliseconds) = text.strip_prefix('@') {
        let milliseconds: i64 = milliseconds
            .parse()
            .map_err(|_| format!("'{text}' is not @ followed by milliseconds since the epoch"))?;
        if milliseconds < SMALLEST_PLAUSIBLE_EPOCH_MS {
            return Err(format!(
                "'{text}' looks like seconds; give milliseconds since the epoch (@{milliseconds}000)"
            ));
        }
        return Ok(Start::Timestamp(milliseconds));
    }
    parse_rfc3339(text).map(Start::Timestamp).map_err(|reason| {
        format!("'{text}' is not a position ({reason}); expected {POSITION_HELP}")
    })
}

/// Describes a position the way [`parse_position`] reads it.
pub fn describe_position(position: Start) -> String {
    match position {
        Start::Earliest => "earliest".to_owned(),
        Start::Latest => "latest".to_owned(),
        Start::Offset(offset) => format!("offset {offset}"),
        Start::Timestamp(milliseconds) => format_rfc3339(milliseconds),
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 time, or of a date's midnight UTC.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let bytes = text.as_bytes();
    let date = text.get(..10).ok_or("too short for a date YYYY-MM-DD")?;
    let days = parse_date(date)?;
    let rest = &bytes[10..];
    if rest.is_empty() {
        return Ok(days * MILLISECONDS_PER_DAY);
    }
    if !matches!(rest[0], b'T' | b't' | b' ') {
        return Err("expected T between the date and the time".to_owned());
    }
    let time = &text[11..];
    let (clock, zone) = match time.find(['Z', 'z', '+', '-']) {
        Some(index) => time.split_at(index),
        None => {
            return Err(
                "the time has no zone: add Z for UTC or an offset such as +01:00".to_owned(),
            );
        }
    };
    let time_of_day = parse_clock(clock)?;
    let zone_offset = parse_zone(zone)?;
    Ok(days * MILLISECONDS_PER_DAY + time_of_day - zone_offset)
}

/// RFC 3339 in UTC with milliseconds: `2026-01-31T09:00:00.000Z`.
pub fn format_rfc3339(milliseconds: i64) -> String {
    let days = milliseconds.div_euclid(MILLISECONDS_PER_DAY);
    let time_of_day = milliseconds.rem_euclid(MILLISECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let seconds = time_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        time_of_day % 1000
    )
}

const MILLISECONDS_PER_DAY: i64 = 86_400_000;

fn number(text: &str, what: &str) -> Result<i64, String> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!("'{text}' is not a {what}"));
    }
    text.parse()
        .map_err(|_| format!("'{text}' is not a {what}"))
}

/// `YYYY-MM-DD` to days since 1970-01-01.
fn parse_date(text: &str) -> Result<i64, String> {
    let parts: Vec<&str> = text.split('-').collect();
    let [year, month, day] = parts[..] else {
        return Err("expected a date YYYY-MM-DD".to_owned());
    };
    if year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return Err("expected a date YYYY-MM-DD".to_owned());
    }
    let year = number(year, "year")?;
    let month = number(month, "month")?;
    let day = number(day, "day")?;
    if !(1..=12).contains(&month) {
        return Err(format!("there is no month {month}"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(format!("there is no day {day} in month {month} of {year}"));
    }
    Ok(days_from_civil(year, month, day))
}

/// `HH:MM[:SS[.fraction]]` to milliseconds into the day (digits past milliseconds dropped).
fn parse_clock(text: &str) -> Result<i64, String> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let parts: Vec<&str> = whole.split(':').collect();
    let (hours, minutes, seconds) = match parts[..] {
        [hours, minutes] => (hours, minutes, "00"),
        [hours, minutes, seconds] => (hours, minutes, seconds),
        _ => return Err("expected a time HH:MM:SS".to_owned()),
    };
    let hours = number(hours, "hour")?;
    let minutes = number(minutes, "minute")?;
    // 60 allows a leap second, which then counts as the next second's first instant.
    let seconds = number(seconds, "second")?;
    if hours > 23 || minutes > 59 || seconds > 60 {
        return Err(format!("{whole} is not a time of day"));
    }
    let milliseconds = match fraction {
        Some(fraction) => {
            if fraction.is_empty() || !fraction.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(format!("'{fraction}' is not a fraction of a second"));
            }
            // Only the first three digits matter: the broker keeps milliseconds.
            let kept: String = fraction.chars().chain("000".chars()).take(3).collect();
            number(&kept, "fraction of a second")?
        }
        None => 0,
    };
    Ok(((hours * 60 + minutes) * 60 + seconds) * 1000 + milliseconds)
}

/// `Z` or `±HH:MM` to the zone's offset from UTC in milliseconds.
fn parse_zone(text: &str) -> Result<i64, String> {
    if text.eq_ignore_ascii_case("z") {
        return Ok(0);
    }
    let (sign, rest) = match text.split_at_checked(1) {
        Some(("+", rest)) => (1, rest),
        Some(("-", rest)) => (-1, rest),
        _ => return Err(format!("'{text}' is not a zone (Z or ±HH:MM)")),
    };
    let (hours, minutes) = rest
        .split_once(':')
        .ok_or_else(|| format!("'{text}' is not a zone (Z or ±HH:MM)"))?;
    let hours = number(hours, "zone hour")?;
    let minutes = number(minutes, "zone minute")?;
    if hours > 23 || minutes > 59 {
        return Err(format!("'{text}' is not a zone offset"));
    }
    Ok(sign * (hours * 60 + minutes) * 60_000)
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Counting years from March puts the leap day at the end of the year.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The Gregorian date of a day counted from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_position_parses() {
        assert_eq!(parse_position("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_position("latest"), Ok(Start::Latest));
        assert_eq!(parse_position("42"), Ok(Start::Offset(42)));
        assert_eq!(
            parse_position("@1767225600000"),
            Ok(Start::Timestamp(1_767_225_600_000))
        );
        assert_eq!(
            parse_position("2026-01-01T00:00:00Z"),
            Ok(Start::Timestamp(1_767_225_600_000))
        );
        assert_eq!(
            parse_position("2026-01-01"),
            Ok(Start::Timestamp(1_767_225_600_000))
        );
    }

    #[test]
    fn bad_positions_are_refused_with_a_reason() {
        assert!(
            parse_position("@1767225600")
                .unwrap_err()
                .contains("seconds")
        );
        assert!(parse_position("soon").unwrap_err().contains("earliest"));
        assert!(
            parse_position("2026-01-01T09:00:00")
                .unwrap_err()
                .contains("zone")
        );
        assert!(
            parse_position("2026-02-30")
                .unwrap_err()
                .contains("no day 30")
        );
        assert!(parse_position("2026-13-01").is_err());
        assert!(parse_position("2026-01-01T25:00:00Z").is_err());
        assert!(parse_position("99999999999999999999999").is_err());
    }

    #[test]
    fn zones_fractions_and_leap_days_convert_exactly() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(parse_rfc3339("1969-12-31T19:00:00-05:00"), Ok(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Ok(1500));
        assert_eq!(parse_rfc3339("1970-01-01 00:00:00.123456z"), Ok(123));
        assert_eq!(parse_rfc3339("2024-02-29T12:00:00Z"), Ok(1_709_208_000_000));
    }

    #[test]
    fn formatting_is_the_inverse_of_parsing() {
        for milliseconds in [
            0,
            1_767_225_600_000,
            1_709_208_000_123,
            -86_400_001,
            951_782_400_000, // 2000-02-29
            4_102_444_799_999,
        ] {
            let text = format_rfc3339(milliseconds);
            assert_eq!(parse_rfc3339(&text), Ok(milliseconds), "{text}");
        }
        assert_eq!(format_rfc3339(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }
}
