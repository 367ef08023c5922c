//! Reading the YAML file: unknown fields and bad values are errors naming the field.

use std::path::Path;

use super::Config;
use crate::error::Error;

impl Config {
    /// Reads a YAML file; unknown fields and bad values are errors naming the field.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| match e {
            Error::ConfigParse { field, message, .. } => Error::ConfigParse {
                path: path.to_path_buf(),
                field,
                message,
            },
            other => other,
        })
    }

    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let mut config: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            Error::ConfigParse {
                path: Default::default(),
                field: if field == "." {
                    "(top level)".into()
                } else {
                    field
                },
                message: e.into_inner().to_string(),
            }
        })?;
        if config.log_format.is_some() || config.log_cached_allow_sample_ratio.is_some() {
            // Which new keys the file sets (not only whether they differ from the default).
            let tree: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).unwrap_or_default();
            let set = |key: &str| tree.get("log").and_then(|l| l.get(key)).is_some();
            config.fold_old_log_keys(set("format"), set("cached_allow_sample_ratio"))?;
        }
        Ok(config)
    }
}
