//! Overrides of single config keys from `--set key=value` flags and `FLASHGATE_*` variables.

use super::ConfigError;

/// Sections whose keys may be overridden; used to split `FLASHGATE_SECTION_KEY` names,
/// whose keys themselves contain underscores.
const SECTIONS: &[&str] = &[
    "server", "upstream", "queue", "sale", "identity", "limits", "store", "delivery", "admin",
    "cluster", "pages", "log",
];

/// Environment variables that configure the command line rather than a key.
const NOT_KEYS: &[&str] = &["FLASHGATE_CONFIG"];

/// One key set from outside the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Where it came from, for error messages: `--set server.listen=…` or the variable's name.
    pub origin: String,
    /// Dotted path: `server.listen`, `sale.0.stock`.
    pub key: Vec<String>,
    /// The raw value; parsed as a TOML value if it is one, else taken as a string.
    pub value: String,
}

impl Override {
    /// Parses a `key=value` flag argument.
    pub fn from_flag(arg: &str) -> Result<Self, ConfigError> {
        let origin = format!("--set {arg}");
        let (key, value) = arg.split_once('=').ok_or_else(|| ConfigError::Override {
            origin: origin.clone(),
            reason: "expected KEY=VALUE, e.g. server.listen=127.0.0.1:8080".to_owned(),
        })?;
        let key: Vec<String> = key.trim().split('.').map(str::to_owned).collect();
        if key.iter().any(String::is_empty) {
            return Err(ConfigError::Override {
                origin,
                reason: "the key has an empty part".to_owned(),
            });
        }
        Ok(Self {
            origin,
            key,
            value: value.to_owned(),
        })
    }

    /// Maps `FLASHGATE_SERVER_MAX_CONNECTIONS` to `server.max_connections`
    /// and `FLASHGATE_SALE_0_STOCK` to `sale.0.stock`.
    pub fn from_env(name: &str, value: &str) -> Result<Self, ConfigError> {
        let bad = |reason: &str| ConfigError::Override {
            origin: name.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = name
            .strip_prefix("FLASHGATE_")
            .ok_or_else(|| bad("not a FLASHGATE_ variable"))?
            .to_ascii_lowercase();
        let section = SECTIONS
            .iter()
            .find(|s| rest.starts_with(&format!("{s}_")))
            .ok_or_else(|| {
                bad(&format!(
                    "no config section matches; known: {}",
                    SECTIONS.join(", ")
                ))
            })?;
        let mut tail = &rest[section.len() + 1..];
        let mut key = vec![(*section).to_owned()];
        if *section == "sale" {
            let (index, after) = tail
                .split_once('_')
                .ok_or_else(|| bad("expected FLASHGATE_SALE_<index>_<key>"))?;
            key.push(index.to_owned());
            tail = after;
        }
        if tail.is_empty() {
            return Err(bad("no key after the section"));
        }
        key.push(tail.to_owned());
        Ok(Self {
            origin: name.to_owned(),
            key,
            value: value.to_owned(),
        })
    }

    /// Writes this override into the parsed file.
    pub(super) fn apply(&self, root: &mut toml::Table) -> Result<(), ConfigError> {
        let value = parse_value(&self.value);
        let fail = |reason: String| ConfigError::Override {
            origin: self.origin.clone(),
            reason,
        };
        let (last, parents) = self
            .key
            .split_last()
            .ok_or_else(|| fail("empty key".to_owned()))?;
        let mut table = root;
        let mut i = 0;
        while i < parents.len() {
            let part = &parents[i];
            let entry = table
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                toml::Value::Array(items) => {
                    // An array of tables (`[[sale]]`): the next part is the index.
                    i += 1;
                    let index: usize =
                        parents.get(i).and_then(|s| s.parse().ok()).ok_or_else(|| {
                            fail(format!(
                                "`{part}` is a list: give an index, e.g. {part}.0.…"
                            ))
                        })?;
                    match items.get_mut(index) {
                        Some(toml::Value::Table(t)) => t,
                        _ => return Err(fail(format!("`{part}` has no entry {index}"))),
                    }
                }
                _ => return Err(fail(format!("`{part}` is not a section"))),
            };
            i += 1;
        }
        table.insert(last.clone(), value);
        Ok(())
    }
}

/// Reads overrides from `FLASHGATE_*` variables.
pub fn env_overrides<I>(vars: I) -> Result<Vec<Override>, ConfigError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut found: Vec<Override> = Vec::new();
    for (name, value) in vars {
        if name.starts_with("FLASHGATE_") && !NOT_KEYS.contains(&name.as_str()) {
            found.push(Override::from_env(&name, &value)?);
        }
    }
    // Deterministic order, whatever the environment's.
    found.sort_by(|a, b| a.origin.cmp(&b.origin));
    Ok(found)
}

/// `100` is an integer, `true` a boolean, `[1, 2]` an array; anything that is not a TOML
/// value (`127.0.0.1:8080`, `5s`) is a string.
fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_map_to_dotted_keys() {
        let o = Override::from_env("FLASHGATE_SERVER_MAX_CONNECTIONS", "5").expect("valid");
        assert_eq!(o.key, ["server", "max_connections"]);
        let o = Override::from_env("FLASHGATE_SALE_1_PER_USER_LIMIT", "2").expect("valid");
        assert_eq!(o.key, ["sale", "1", "per_user_limit"]);
        assert!(Override::from_env("FLASHGATE_NOPE_X", "1").is_err());
        // Secrets come from the environment (the service's env file): every section is reachable.
        let o = Override::from_env("FLASHGATE_CLUSTER_SECRET", "s").expect("valid");
        assert_eq!(o.key, ["cluster", "secret"]);
        let o = Override::from_env("FLASHGATE_PAGES_DIR", "/p").expect("valid");
        assert_eq!(o.key, ["pages", "dir"]);
    }

    #[test]
    fn values_are_typed_when_they_are_toml() {
        assert_eq!(parse_value("42"), toml::Value::Integer(42));
        assert_eq!(parse_value("true"), toml::Value::Boolean(true));
        assert_eq!(parse_value("5s"), toml::Value::String("5s".into()));
        assert_eq!(
            parse_value("127.0.0.1:80"),
            toml::Value::String("127.0.0.1:80".into())
        );
    }

    #[test]
    fn overrides_reach_into_sale_lists() {
        let mut t: toml::Table = "[[sale]]\nsku = \"a\"\nstock = 1\n".parse().expect("toml");
        Override::from_flag("sale.0.stock=9")
            .expect("flag")
            .apply(&mut t)
            .expect("applies");
        let stock = t["sale"]
            .as_array()
            .and_then(|a| a[0].get("stock"))
            .cloned();
        assert_eq!(stock, Some(toml::Value::Integer(9)));
        let err = Override::from_flag("sale.3.stock=9")
            .expect("flag")
            .apply(&mut t);
        assert!(err.is_err());
    }
}
