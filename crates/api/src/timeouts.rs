//! Turning the SDKs' timeout seconds into end times, within the allowed range.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::ApiError;

/// Validates `seconds` (fractions round up) against `max`.
pub fn checked(seconds: f64, max: Duration, what: &str) -> Result<Duration, ApiError> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(ApiError::bad_request(format!(
            "{what} must be a non-negative number of seconds"
        )));
    }
    let secs = seconds.ceil();
    if secs > max.as_secs() as f64 {
        return Err(ApiError::bad_request(format!(
            "{what} of {secs} seconds exceeds the maximum of {} seconds",
            max.as_secs()
        )));
    }
    Ok(Duration::from_secs(secs as u64))
}

pub fn end_at(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        let max = Duration::from_secs(3600);
        assert_eq!(checked(300.0, max, "t").unwrap(), Duration::from_secs(300));
        assert_eq!(checked(1.2, max, "t").unwrap(), Duration::from_secs(2));
        assert_eq!(checked(3600.0, max, "t").unwrap(), max);
        assert!(checked(3600.5, max, "t").is_err());
        assert!(checked(-1.0, max, "t").is_err());
        assert!(checked(f64::NAN, max, "t").is_err());
    }
}
