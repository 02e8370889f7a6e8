//! A snapshot of the process environment, read once at start-up, so configuration is resolved
//! from a value (tests resolve several side by side) rather than from global state.

use std::collections::BTreeMap;

/// A snapshot of the environment variables we read.
#[derive(Debug, Clone, Default)]
pub struct Environment(BTreeMap<String, String>);

impl Environment {
    pub fn capture() -> Environment {
        Environment(
            std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.0.insert(key.to_string(), value.to_string());
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Environment {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Environment(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}
