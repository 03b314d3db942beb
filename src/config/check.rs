//! The configuration's error and the range checks every section shares: one wording per
//! kind of mistake, and the key always named, so a user can find the line to fix.

/// A configuration problem, always naming the key (or file) at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl From<String> for ConfigError {
    /// A domain type's own check (its message already names the key).
    fn from(message: String) -> Self {
        ConfigError(message)
    }
}

/// `key` must be at least `min`.
pub(super) fn at_least(key: &str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError(format!(
            "{key} must be at least {min}, got {value}"
        )));
    }
    Ok(())
}

/// `key` must be at most `max`.
pub(super) fn at_most(key: &str, value: u64, max: u64) -> Result<(), ConfigError> {
    if value > max {
        return Err(ConfigError(format!(
            "{key} must be at most {max}, got {value}"
        )));
    }
    Ok(())
}

/// Every `(key, value)` must be at least 1: counts, sizes and durations where 0 would
/// switch a protection off or divide by zero.
pub(super) fn all_at_least_one(keys: &[(&str, u64)]) -> Result<(), ConfigError> {
    keys.iter()
        .try_for_each(|(key, value)| at_least(key, *value, 1))
}

/// The first `(key, value, min, max)` of `section` whose value is outside `min..=max`, as
/// an error `describe(min, max, value)` words (each section keeps the wording its users
/// already know).
pub(super) fn all_within(
    section: &str,
    checks: &[(&str, u64, u64, u64)],
    describe: impl Fn(u64, u64, u64) -> String,
) -> Result<(), ConfigError> {
    match checks
        .iter()
        .find(|(_, value, min, max)| !(min..=max).contains(&value))
    {
        Some((key, value, min, max)) => Err(ConfigError(format!(
            "{section}.{key} {}",
            describe(*min, *max, *value)
        ))),
        None => Ok(()),
    }
}
