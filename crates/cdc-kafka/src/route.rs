//! Which topic a table's changes go to: an explicit map, or a template with
//! `{db}`, `{schema}` and `{table}` placeholders.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cdc_core::{TableName, TableSchema};

/// Longest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Db,
    Schema,
    Table,
}

/// A parsed `topic` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicTemplate(Vec<Part>);

impl TopicTemplate {
    /// Parses a template; the error says what is wrong with it.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in `{text}`"))?;
            parts.push(match &after[..close] {
                "db" => Part::Db,
                "schema" => Part::Schema,
                "table" => Part::Table,
                other => {
                    return Err(format!(
                        "unknown placeholder `{{{other}}}` in `{text}`: use {{db}}, {{schema}}, {{table}}"
                    ))
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if parts.is_empty() {
            return Err("must not be empty".into());
        }
        for p in &parts {
            if let Part::Text(t) = p {
                if let Some(c) = t.chars().find(|c| !is_topic_char(*c)) {
                    return Err(format!(
                        "`{c}` is not allowed in a Kafka topic name (use a-z A-Z 0-9 . _ -)"
                    ));
                }
                if t.contains('}') {
                    return Err(format!("unmatched `}}` in `{text}`"));
                }
            }
        }
        Ok(Self(parts))
    }

    /// The topic for `table` in database `db`; characters Kafka does not
    /// allow are replaced by `_`.
    pub(crate) fn render(&self, db: &str, table: &TableName) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Db => push_sanitized(&mut out, db),
                Part::Schema => push_sanitized(&mut out, &table.schema),
                Part::Table => push_sanitized(&mut out, &table.name),
            }
        }
        out
    }
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn push_sanitized(out: &mut String, s: &str) {
    out.extend(s.chars().map(|c| if is_topic_char(c) { c } else { '_' }));
}

/// Checks a literal topic name.
pub(crate) fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty topic name".into());
    }
    if name == "." || name == ".." {
        return Err(format!("`{name}` is not a valid topic name"));
    }
    if name.len() > MAX_TOPIC_LEN {
        return Err(format!(
            "topic names are at most {MAX_TOPIC_LEN} characters"
        ));
    }
    if let Some(c) = name.chars().find(|c| !is_topic_char(*c)) {
        return Err(format!(
            "`{c}` is not allowed in a Kafka topic name (use a-z A-Z 0-9 . _ -)"
        ));
    }
    Ok(())
}

/// Resolves and caches the topic of each table.
#[derive(Debug)]
pub(crate) struct Router {
    template: Option<TopicTemplate>,
    explicit: BTreeMap<String, String>,
    cache: HashMap<TableName, Arc<str>>,
}

impl Router {
    /// A router from the `topic` template (already validated) and the
    /// `topics` map. Without both, the default template is used.
    pub(crate) fn new(
        template: Option<&str>,
        explicit: &BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let template = match (template, explicit.is_empty()) {
            (Some(t), _) => Some(TopicTemplate::parse(t)?),
            (None, true) => Some(TopicTemplate::parse(crate::KafkaSinkConfig::DEFAULT_TOPIC)?),
            (None, false) => None,
        };
        Ok(Self {
            template,
            explicit: explicit.clone(),
            cache: HashMap::new(),
        })
    }

    /// The topic of `table`, or an error when `topics` does not list it
    /// and there is no template; the `bool` is `true` the first time this
    /// table is seen.
    pub(crate) fn topic(&mut self, table: &TableSchema) -> Result<(Arc<str>, bool), String> {
        if let Some(t) = self.cache.get(&table.name) {
            return Ok((t.clone(), false));
        }
        let qualified = table.name.to_string();
        let topic = match (self.explicit.get(&qualified), &self.template) {
            (Some(t), _) => t.clone(),
            (None, Some(tpl)) => tpl.render(&table.database, &table.name),
            (None, None) => {
                return Err(format!(
                    "no topic for table {qualified}: it is not listed in `topics` and no `topic` template is set"
                ))
            }
        };
        check_topic_name(&topic)
            .map_err(|e| format!("topic `{topic}` of table {qualified}: {e}"))?;
        let topic: Arc<str> = topic.into();
        self.cache.insert(table.name.clone(), topic.clone());
        Ok((topic, true))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn table(schema: &str, name: &str) -> TableSchema {
        TableSchema {
            database: "app db".into(),
            oid: 1,
            name: TableName::new(schema, name),
            columns: vec![],
            replica_identity: cdc_core::ReplicaIdentity::Default,
        }
    }

    #[test]
    fn templates_render_and_sanitize() {
        let t = TopicTemplate::parse("cdc.{db}.{schema}.{table}").unwrap();
        assert_eq!(
            t.render("app db", &TableName::new("Billing", "Invoice Lines/ü")),
            "cdc.app_db.Billing.Invoice_Lines__"
        );
        assert!(TopicTemplate::parse("x.{nope}")
            .unwrap_err()
            .contains("{nope}"));
        assert!(TopicTemplate::parse("x.{table").is_err());
        assert!(TopicTemplate::parse("a b.{table}").is_err());
        assert!(TopicTemplate::parse("").is_err());
    }

    #[test]
    fn explicit_map_wins_and_missing_tables_fail() {
        let mut map = BTreeMap::new();
        map.insert("public.users".to_owned(), "users-v1".to_owned());
        let mut r = Router::new(None, &map).unwrap();
        assert_eq!(&*r.topic(&table("public", "users")).unwrap().0, "users-v1");
        assert!(!r.topic(&table("public", "users")).unwrap().1);
        assert!(r
            .topic(&table("public", "orders"))
            .unwrap_err()
            .contains("public.orders"));
        let mut r = Router::new(Some("t.{table}"), &map).unwrap();
        assert_eq!(&*r.topic(&table("public", "orders")).unwrap().0, "t.orders");
        let mut r = Router::new(None, &BTreeMap::new()).unwrap();
        assert_eq!(&*r.topic(&table("s", "t")).unwrap().0, "cdc.s.t");
    }
}
