//! The layers a configuration is merged from, each a TOML table: the embedded defaults,
//! an optional file, `PELOTON_*` environment variables, then command-line flags. Working on
//! tables lets every layer merge the same way and every error name the exact key; the
//! typed sections are only read once the merged table is complete.

use super::check::ConfigError;

/// The defaults, compiled in so the binary runs with no file beside it.
pub const DEFAULT_CONFIG: &str = include_str!("../../config.toml");

/// Parses one layer; `origin` (a file name) starts every error.
pub(super) fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError(format!("{origin}: {}", e.message().trim())))
}

/// Copies `layer` onto `base`, refusing keys the defaults do not have so a typo is an error
/// rather than a silently ignored setting.
pub(super) fn merge_layer(
    base: &mut toml::Table,
    layer: toml::Table,
    origin: &str,
) -> Result<(), ConfigError> {
    for (section, value) in layer {
        let Some(toml::Value::Table(base_section)) = base.get_mut(&section) else {
            return Err(ConfigError(format!(
                "{origin}: unknown section [{section}]"
            )));
        };
        let toml::Value::Table(entries) = value else {
            return Err(ConfigError(format!(
                "{origin}: `{section}` must be a [section]"
            )));
        };
        for (key, value) in entries {
            let Some(default) = base_section.get(&key) else {
                return Err(ConfigError(format!(
                    "{origin}: unknown key {section}.{key}"
                )));
            };
            if default.type_str() != value.type_str() {
                return Err(ConfigError(format!(
                    "{origin}: {section}.{key} must be {} {}, got {} {}",
                    article(default.type_str()),
                    default.type_str(),
                    article(value.type_str()),
                    value.type_str(),
                )));
            }
            base_section.insert(key, value);
        }
    }
    Ok(())
}

/// Applies `PELOTON_<SECTION>_<KEY>` (and the short forms) to known keys, parsing each value
/// as the type the default has.
pub(super) fn apply_env(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut keys = Vec::new();
    for (section, value) in table.iter() {
        if let toml::Value::Table(entries) = value {
            for (key, default) in entries {
                keys.push((section.clone(), key.clone(), default.clone()));
            }
        }
    }
    for (section, key, default) in keys {
        let mut names = vec![format!(
            "PELOTON_{}_{}",
            section.to_uppercase(),
            key.to_uppercase()
        )];
        match (section.as_str(), key.as_str()) {
            ("server", "listen") => names.push("PELOTON_LISTEN".into()),
            ("server", "data_dir") => names.push("PELOTON_DATA".into()),
            _ => {}
        }
        // The short forms are what users type, so they win over the long forms.
        let Some((name, raw)) = names
            .iter()
            .rev()
            .find_map(|n| lookup(n).map(|v| (n.clone(), v)))
        else {
            continue;
        };
        let parsed = |kind: &str, value: Option<toml::Value>| {
            value.ok_or_else(|| {
                ConfigError(format!(
                    "{section}.{key} (from {name}) must be {kind}, got `{raw}`"
                ))
            })
        };
        let text = raw.trim();
        let value = match default {
            toml::Value::String(_) => toml::Value::String(raw.clone()),
            toml::Value::Integer(_) => {
                parsed("an integer", text.parse().ok().map(toml::Value::Integer))?
            }
            toml::Value::Boolean(_) => {
                parsed("true or false", text.parse().ok().map(toml::Value::Boolean))?
            }
            toml::Value::Float(_) => parsed("a number", text.parse().ok().map(toml::Value::Float))?,
            _ => {
                return Err(ConfigError(format!(
                    "{section}.{key} cannot be set from the environment"
                )))
            }
        };
        set_key(table, &section, &key, value);
    }
    Ok(())
}

/// `a` or `an` before a TOML type's name, so messages read as English.
fn article(type_name: &str) -> &'static str {
    if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Sets `section.key` if the section exists (keys come from the defaults, so it does).
pub(super) fn set_key(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    if let Some(toml::Value::Table(entries)) = table.get_mut(section) {
        entries.insert(key.to_owned(), value);
    }
}
