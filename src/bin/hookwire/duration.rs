//! Durations on the command line: one convention for every duration flag.
//!
//! A duration is a whole number with a unit (`ms`, `s`, `m`, `h` or `d`), and parts add up (`1m30s`, `1h 30m`). A bare number keeps the unit its flag has always had
//! (milliseconds for `--linger`, seconds for `--timeout`...), so existing scripts mean what
//! they meant. A flag stores its value in its own unit, so a value that is not a whole
//! number of it (`--max-age 1500ms`) is refused, not rounded.

use std::time::Duration;

/// The unit a flag counts in: what a bare number means, and what its value is stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Milliseconds.
    Millis,
    /// Seconds.
    Secs,
}

impl Unit {
    fn nanos(self) -> u128 {
        match self {
            Unit::Millis => 1_000_000,
            Unit::Secs => 1_000_000_000,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Millis => "milliseconds",
            Unit::Secs => "seconds",
        }
    }
}

/// Parses `s` as a duration; a bare number counts in `bare`.
pub(crate) fn parse(s: &str, bare: Unit) -> Result<Duration, String> {
    let text = s.trim();
    let bad = || {
        format!(
            "{s:?} is not a duration: use a whole number with a unit (500ms, 30s, 5m, 1h, 2d, \
             1m30s), or a bare number of {}",
            bare.name()
        )
    };
    if text.is_empty() {
        return Err(bad());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let n: u128 = text.parse().map_err(|_| bad())?;
        return from_nanos(n.checked_mul(bare.nanos()).ok_or_else(bad)?).ok_or_else(bad);
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let per: u128 = match &rest[..letters] {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            _ => return Err(bad()),
        };
        rest = rest[letters..].trim_start();
        total = n
            .checked_mul(per)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
    }
    from_nanos(total).ok_or_else(bad)
}

fn from_nanos(n: u128) -> Option<Duration> {
    let secs = u64::try_from(n / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (n % 1_000_000_000) as u32))
}

/// Parses `s` (see [`parse`]) into a whole number of `unit`, between `min` and `max` of it.
pub(crate) fn in_unit(s: &str, unit: Unit, min: u64, max: u64) -> Result<u64, String> {
    let d = parse(s, unit)?;
    let nanos = d.as_nanos();
    if nanos % unit.nanos() != 0 {
        return Err(format!(
            "{s:?} is not a whole number of {}: this flag counts in {}",
            unit.name(),
            unit.name()
        ));
    }
    let n = u64::try_from(nanos / unit.nanos()).unwrap_or(u64::MAX);
    if n < min || n > max {
        return Err(format!(
            "{s:?} is out of range: {} to {} {}",
            min,
            max,
            unit.name()
        ));
    }
    Ok(n)
}

/// A duration flag counted in milliseconds (`--linger`, `--request-timeout`...), for clap.
pub(crate) fn millis_arg(s: &str) -> Result<u64, String> {
    in_unit(s, Unit::Millis, 0, u64::MAX)
}

/// A duration flag counted in seconds (`--max-age`), for clap.
pub(crate) fn secs_arg(s: &str) -> Result<u64, String> {
    in_unit(s, Unit::Secs, 0, u64::MAX)
}

/// A duration flag counted in seconds, from 1 s to a day (`send --timeout`, `bench
/// --limit`), for clap.
pub(crate) fn secs_to_a_day_arg(s: &str) -> Result<u64, String> {
    in_unit(s, Unit::Secs, 1, 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_numbers() {
        let ms = |s| parse(s, Unit::Millis).unwrap();
        assert_eq!(
            ms("250"),
            Duration::from_millis(250),
            "bare: the flag's unit"
        );
        assert_eq!(parse("30", Unit::Secs).unwrap(), Duration::from_secs(30));
        assert_eq!(ms("500ms"), Duration::from_millis(500));
        assert_eq!(ms("30s"), Duration::from_secs(30));
        assert_eq!(ms("5m"), Duration::from_secs(300));
        assert_eq!(ms("1h"), Duration::from_secs(3600));
        assert_eq!(ms("2d"), Duration::from_secs(172_800));
        assert_eq!(ms("1m30s"), Duration::from_secs(90));
        assert_eq!(ms(" 1h 30m "), Duration::from_secs(5400));
        assert_eq!(ms("1s500ms"), Duration::from_millis(1500));
        assert_eq!(ms("0"), Duration::ZERO);
    }

    #[test]
    fn bad_durations_say_how_to_write_one() {
        for bad in [
            "",
            "ms",
            "5x",
            "1.5s",
            "-1s",
            "5 s x",
            "s5",
            "1h30",
            "99999999999999999999d",
        ] {
            let e = parse(bad, Unit::Millis).unwrap_err();
            assert!(
                e.contains("is not a duration") && e.contains("milliseconds"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_flag_keeps_its_unit_and_its_range() {
        assert_eq!(in_unit("2s", Unit::Millis, 0, u64::MAX), Ok(2000));
        assert_eq!(in_unit("1h", Unit::Secs, 1, 86_400), Ok(3600));
        assert_eq!(in_unit("90", Unit::Secs, 1, 86_400), Ok(90));
        let e = in_unit("1500ms", Unit::Secs, 0, u64::MAX).unwrap_err();
        assert!(e.contains("whole number of seconds"), "{e}");
        let e = in_unit("2d", Unit::Secs, 1, 86_400).unwrap_err();
        assert!(e.contains("1 to 86400 seconds"), "{e}");
        assert!(in_unit("0", Unit::Secs, 1, 86_400).is_err());
        assert_eq!(secs_to_a_day_arg("1d"), Ok(86_400));
        assert_eq!(millis_arg("0"), Ok(0));
        assert_eq!(secs_arg("2m"), Ok(120));
    }
}
