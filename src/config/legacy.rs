//! The environment variable names existing deployments already use, mapped onto
//! settings. Each value is parsed here so a bad one is reported under the name the
//! operator set.

use std::collections::HashMap;

use ::config::builder::DefaultState;
use ::config::ConfigBuilder;

use super::ConfigError;

/// What a variable holds, and so how it is parsed.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Whole,
    Flag,
}

/// Variable name, setting key, kind.
const LEGACY: &[(&str, &str, Kind)] = &[
    ("DATABASE_URL", "postgres.url", Kind::Text),
    ("DATABASE_READ_URL", "postgres.read_url", Kind::Text),
    ("LOKI_PUSH_URL", "loki.push_url", Kind::Text),
    ("REDIS_URL", "redis.url", Kind::Text),
    ("REDIS_CLUSTER", "redis.cluster", Kind::Flag),
    ("REDIS_LOG_DB", "redis.db", Kind::Whole),
    ("REDIS_LOG_TTL", "redis.ttl_seconds", Kind::Whole),
    ("REDIS_MAX_LOGS", "redis.max_len", Kind::Whole),
    ("REDIS_LOG_ENABLED", "redis.enabled", Kind::Flag),
    ("LOGGING_ENABLED", "files.enabled", Kind::Flag),
    ("LOGGING_LEVEL", "logging.level", Kind::Text),
    ("LOGGING_FILE", "files.path", Kind::Text),
    ("LOGGING_MAX_SIZE_MB", "files.max_size_mb", Kind::Whole),
    ("LOGGING_BACKUP_COUNT", "files.backup_count", Kind::Whole),
    ("TIERLOG_LISTEN", "server.listen", Kind::Text),
    ("TIERLOG_BOOTSTRAP_KEY", "server.bootstrap_key", Kind::Text),
];

/// Adds an override for every legacy variable present in `env`.
pub(super) fn apply(
    mut builder: ConfigBuilder<DefaultState>,
    env: &HashMap<String, String>,
) -> Result<ConfigBuilder<DefaultState>, ConfigError> {
    for (name, key, kind) in LEGACY {
        let Some(raw) = env.get(*name) else { continue };
        let raw = raw.trim();
        builder = match kind {
            Kind::Text => builder.set_override(*key, raw)?,
            Kind::Whole => {
                let value: u64 = raw.parse().map_err(|_| ConfigError::Invalid {
                    setting: (*name).to_owned(),
                    reason: format!("expected a whole number, got {raw:?}"),
                })?;
                builder.set_override(*key, value)?
            }
            Kind::Flag => builder.set_override(*key, parse_flag(name, raw)?)?,
        };
    }
    Ok(builder)
}

fn parse_flag(name: &str, raw: &str) -> Result<bool, ConfigError> {
    match raw.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Invalid {
            setting: name.to_owned(),
            reason: format!("expected true or false, got {raw:?}"),
        }),
    }
}
