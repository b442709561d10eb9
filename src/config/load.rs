//! Reading a config: the file, then overrides written into its table, then the typed,
//! validated config; and printing the effective one.

use std::path::Path;

use super::{validate, warnings, Config, ConfigError, Override, SaleConfig};

impl Config {
    /// Warnings about a valid config (see `check-config`).
    pub fn warnings(&self) -> Vec<String> {
        warnings::of(self)
    }

    /// A warning when the connections this config allows do not fit under an open-files
    /// `limit`.
    pub fn open_files_warning(&self, limit: u64) -> Option<String> {
        warnings::open_files(self, limit)
    }

    /// Reads, overrides and validates the config file at `path`.
    pub fn load(path: &Path, overrides: &[Override]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Self::from_toml(&text, &path.display().to_string(), overrides)?;
        if config.server.data_dir.is_none() {
            // Beside the config file, so that the same config started again finds it.
            let name = path
                .file_name()
                .map_or_else(|| "flashgate".into(), |n| n.to_string_lossy().into_owned());
            let dir = path.with_file_name(format!("{name}.data"));
            config.server.data_dir = Some(dir.display().to_string());
        }
        Ok(config)
    }

    /// Parses, overrides and validates config text; `origin` names it in errors.
    pub fn from_toml(
        text: &str,
        origin: &str,
        overrides: &[Override],
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: origin.to_owned(),
                    message: e.to_string().trim_end().to_owned(),
                })?;
        for o in overrides {
            o.apply(&mut table)?;
        }
        let config: Config =
            serde_path_to_error::deserialize(table).map_err(validate::from_serde_error)?;
        validate::check(&config)?;
        Ok(config)
    }

    /// The effective configuration as TOML (what `check-config` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

impl SaleConfig {
    /// A sale's definition from the admin API's JSON, checked as a `[[sale]]` of the file
    /// is; the error names the key (`starts_at`, `queue.capacity`).
    pub fn from_json(value: serde_json::Value) -> Result<Self, ConfigError> {
        let sale: SaleConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::invalid(key, e.into_inner().to_string())
        })?;
        validate::check_sale(&sale, "")?;
        Ok(sale)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::*;

    const MINIMAL: &str = "[upstream]\nurl = \"http://127.0.0.1:9000\"\n";

    #[test]
    fn minimal_file_gets_defaults() {
        let c = Config::from_toml(MINIMAL, "t", &[]).expect("minimal config is valid");
        assert_eq!(c.server.max_connections, 10_000);
        assert_eq!(c.queue.overflow, Overflow::Reject);
        assert!(c.sales.is_empty());
    }

    #[test]
    fn effective_config_round_trips() {
        let text = format!(
            "{MINIMAL}[[sale]]\nsku = \"phone\"\nstock = 5\nstarts_at = \"2026-11-11T00:00:00+08:00\"\n"
        );
        let c = Config::from_toml(&text, "t", &[]).expect("valid");
        let again = Config::from_toml(&c.to_toml(), "t", &[]).expect("printed config is valid");
        assert_eq!(again.to_toml(), c.to_toml());
    }

    #[test]
    fn store_passwords_are_never_printed() {
        assert_eq!(
            redact_url("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://:<redacted>@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("rediss://app:hunter2@cache:6380"),
            "rediss://app:<redacted>@cache:6380"
        );
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
        let text =
            format!("{MINIMAL}[store]\nkind = \"redis\"\nurl = \"redis://:hunter2@cache:6379\"\n[cluster]\nsecret = \"hunter3-hunter3-hunter3\"\n");
        let c = Config::from_toml(&text, "t", &[]).expect("valid");
        assert!(!c.to_toml().contains("hunter2"));
        assert!(!c.to_toml().contains("hunter3"), "nor the token secret");
        let bad = format!("{MINIMAL}[store]\nkind = \"redis\"\nurl = \"http://:hunter2@cache\"\n");
        let err = Config::from_toml(&bad, "t", &[])
            .expect_err("not a redis URL")
            .to_string();
        assert!(
            err.contains("store.url") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn per_sale_overrides_win() {
        let text =
            format!("{MINIMAL}[[sale]]\nsku = \"a\"\nstock = 1\nqueue = {{ capacity = 7 }}\n");
        let c = Config::from_toml(&text, "t", &[]).expect("valid");
        let q = c.queue_for(&c.sales[0]);
        assert_eq!(q.capacity, 7);
        assert_eq!(q.drain_rate, c.queue.drain_rate);
    }
}

/// The checks of `validate`, through the loading every config goes through.
#[cfg(test)]
mod validation_tests {
    use crate::config::{Config, ConfigError, Override};

    fn key_of(text: &str, overrides: &[Override]) -> String {
        match Config::from_toml(text, "t", overrides) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    const UP: &str = "[upstream]\nurl = \"http://127.0.0.1:9000\"\n";

    #[test]
    fn an_auto_drain_rate_has_bounds_and_needs_the_gateways_deliveries() {
        let sale = "[[sale]]\nsku = \"a\"\nstock = 1\n";
        let auto = format!("{UP}[queue]\ndrain_rate = \"auto\"\ndrain_min = 5\n{sale}");
        let c = Config::from_toml(&auto, "t", &[]).expect("valid");
        assert_eq!(c.queue.start_rate(), 5);
        let upside_down = auto.replace("drain_min = 5", "drain_min = 5\ndrain_max = 4");
        assert_eq!(key_of(&upside_down, &[]), "queue.drain_max");
        let redis = "[store]\nkind = \"redis\"\n[cluster]\nsecret = \"0123456789abcdef0\"\n";
        let stream = format!("{auto}{redis}[delivery]\nmode = \"stream\"\n");
        assert_eq!(key_of(&stream, &[]), "queue.drain_rate");
        // The default of sales created live later, too.
        let no_sale = stream.replace(sale, "");
        assert_eq!(key_of(&no_sale, &[]), "queue.drain_rate");
        assert_eq!(
            key_of(&format!("{UP}[queue]\ndrain_rate = \"fast\"\n"), &[]),
            "queue.drain_rate"
        );
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            key_of("[upstream]\nurl = \"ftp://x\"\n", &[]),
            "upstream.url"
        );
        assert_eq!(key_of("[upstream]\n", &[]), "upstream.url");
        assert_eq!(
            key_of(&format!("{UP}[server]\nmaxconn = 3\n"), &[]),
            "server.maxconn"
        );
        assert_eq!(key_of(&format!("bogus = 1\n{UP}"), &[]), "bogus");
        for delivered in ["[200]", "[409]", "[99]", "[600]"] {
            assert_eq!(
                key_of(
                    &format!("{UP}[delivery]\nretry_statuses = {delivered}\n"),
                    &[]
                ),
                "delivery.retry_statuses"
            );
        }
        assert_eq!(key_of(&format!("{UP}bogus = 1\n"), &[]), "upstream.bogus");
        assert_eq!(
            key_of(&format!("{UP}[queue]\ncapacity = 0\n"), &[]),
            "queue.capacity"
        );
        assert_eq!(
            key_of(&format!("{UP}[server]\nmax_connections = \"many\"\n"), &[]),
            "server.max_connections"
        );
        let window = format!(
            "{UP}[[sale]]\nsku = \"a\"\nstock = 1\nstarts_at = \"2026-01-02T00:00:00Z\"\nends_at = \"2026-01-01T00:00:00Z\"\n"
        );
        assert_eq!(key_of(&window, &[]), "sale.0.ends_at");
        for path in ["/%6frders", "//orders", "/a/../orders", "/orders%2f"] {
            assert_eq!(
                key_of(&format!("{UP}[delivery]\npath = \"{path}\"\n"), &[]),
                "delivery.path",
                "{path}"
            );
        }
        assert_eq!(
            key_of(&format!("{UP}[delivery]\nmode = \"stream\"\n"), &[]),
            "delivery.mode",
            "stream delivery needs the Redis store"
        );
        let o = Override::from_flag("server.header_timeout=0s").expect("flag");
        assert_eq!(key_of(UP, &[o]), "server.header_timeout");
        assert_eq!(
            key_of(
                &format!("{UP}[[sale]]\nsku = \"a\"\nstock = 9007199254740992\n"),
                &[]
            ),
            "sale.0.stock",
            "stock above 2^53 - 1"
        );
        let redis = "[cluster]\nsecret = \"0123456789abcdef\"\n[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:1\"\ntimeout = \"1s\"\n";
        for idle in ["0s", "3s", "6s"] {
            assert_eq!(
                key_of(
                    &format!("{UP}timeout = \"5s\"\n{redis}[delivery]\nclaim_idle = \"{idle}\"\n"),
                    &[]
                ),
                "delivery.claim_idle",
                "claim_idle {idle} is not longer than a POST and a confirm"
            );
        }
        let ok = format!("{UP}timeout = \"5s\"\n{redis}[delivery]\nclaim_idle = \"7s\"\n");
        assert!(Config::from_toml(&ok, "t", &[]).is_ok());
    }
}
