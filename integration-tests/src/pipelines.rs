//! Pipeline configurations for the tests: [`Pipeline`] builds the YAML
//! file the engine reads, [`pipeline_yaml`] is the file-sink pipeline most
//! snapshot tests run.

use std::path::Path;

use crate::TestDb;

/// `snapshot:` of a pipeline that only streams.
pub const STREAM_ONLY: &str = "{ mode: never }";
/// `retry:` of most tests: the first retry after 100 ms, none later than 1 s apart.
pub const FAST_RETRY: &str = "{ initial_backoff: 100ms, max_backoff: 1s }";

/// A single-quoted YAML scalar.
pub fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A pipeline configuration, built up key by key; [`Pipeline::yaml`]
/// writes it. Nothing is set that the test does not set, except what
/// every pipeline needs: `name`, `source.url`, `source.tables`.
///
/// ```
/// use integration_tests::pipelines::{Pipeline, FAST_RETRY, STREAM_ONLY};
/// let yaml = Pipeline::new("t", "postgres://u@127.0.0.1/db")
///     .table("public.t")
///     .publication("p_1")
///     .slot("s_1")
///     .sink("type: kafka\nbrokers: ['127.0.0.1:9092']\ntopic: 'cdc.{table}'")
///     .snapshot(STREAM_ONLY)
///     .retry(FAST_RETRY)
///     .yaml();
/// assert!(yaml.contains("  - type: kafka\n    brokers: ['127.0.0.1:9092']\n"));
/// ```
#[derive(Debug, Clone)]
pub struct Pipeline {
    name: String,
    url: String,
    tables: Vec<String>,
    publication: Option<String>,
    slot: Option<String>,
    /// `(publication, slot)` `create` flags, when set.
    create: Option<(bool, bool)>,
    slot_options: String,
    source_lines: String,
    sinks: Vec<String>,
    /// Top-level keys after `sinks`, in the order first set.
    sections: Vec<(String, String)>,
    extra: String,
}

impl Pipeline {
    /// A pipeline named `name` reading the database at `url`.
    pub fn new(name: &str, url: &str) -> Pipeline {
        Pipeline {
            name: name.to_owned(),
            url: url.to_owned(),
            tables: Vec::new(),
            publication: None,
            slot: None,
            create: None,
            slot_options: String::new(),
            source_lines: String::new(),
            sinks: Vec::new(),
            sections: Vec::new(),
            extra: String::new(),
        }
    }

    /// A stream-only pipeline named `name` of the database at `url` that
    /// captures `table` through `publication` and `slot` (created when
    /// missing), in batches of at most `max_batch_events` waiting at most
    /// 10 ms, with [`FAST_RETRY`]: where the sink and crash tests start.
    pub fn streaming(
        name: &str,
        url: &str,
        table: &str,
        publication: &str,
        slot: &str,
        max_batch_events: usize,
    ) -> Pipeline {
        Pipeline::new(name, url)
            .table(table)
            .publication(publication)
            .slot(slot)
            .snapshot(STREAM_ONLY)
            .batching(&format!(
                "{{ max_batch_events: {max_batch_events}, max_batch_wait: 10ms }}"
            ))
            .retry(FAST_RETRY)
    }

    /// Captures `table`, written as in YAML (`public.t`, `"S"."T"`).
    pub fn table(mut self, table: &str) -> Pipeline {
        self.tables.push(table.to_owned());
        self
    }

    /// Captures each of `tables` (see [`Pipeline::table`]).
    pub fn tables(self, tables: &[&str]) -> Pipeline {
        tables.iter().fold(self, |p, t| p.table(t))
    }

    /// `source.publication.name`.
    pub fn publication(mut self, name: &str) -> Pipeline {
        self.publication = Some(name.to_owned());
        self
    }

    /// `source.slot.name`.
    pub fn slot(mut self, name: &str) -> Pipeline {
        self.slot = Some(name.to_owned());
        self
    }

    /// `source.publication.create` and `source.slot.create`.
    pub fn create(mut self, publication: bool, slot: bool) -> Pipeline {
        self.create = Some((publication, slot));
        self
    }

    /// More keys of `source.slot`, as YAML flow-mapping items
    /// (`standby: true, activity_check_interval: 2s`).
    pub fn slot_options(mut self, items: &str) -> Pipeline {
        self.slot_options = items.to_owned();
        self
    }

    /// More lines under `source:` (each indented by two spaces), e.g.
    /// `  replica_identity: { public.t: full }\n`.
    pub fn source_lines(mut self, lines: &str) -> Pipeline {
        self.source_lines.push_str(lines);
        self
    }

    /// One entry of `sinks`: a YAML flow mapping (`{ type: stdout }`) or
    /// the block lines of a mapping, unindented (`type: kafka\nbrokers: [...]`).
    pub fn sink(mut self, entry: &str) -> Pipeline {
        let mut lines = entry.trim_end().lines();
        let mut text = format!("  - {}\n", lines.next().unwrap_or("{}"));
        for l in lines {
            text.push_str(&format!("    {l}\n"));
        }
        self.sinks.push(text);
        self
    }

    /// A file sink writing to `path`.
    pub fn file_sink(self, path: &Path) -> Pipeline {
        let entry = format!(
            "{{ type: file, path: {} }}",
            yaml_str(&path.to_string_lossy())
        );
        self.sink(&entry)
    }

    /// The top-level key `key` set to `value` (YAML: `{ mode: never }`,
    /// `info`), replacing an earlier value.
    pub fn set(mut self, key: &str, value: &str) -> Pipeline {
        match self.sections.iter_mut().find(|(k, _)| k == key) {
            Some(s) => s.1 = value.to_owned(),
            None => self.sections.push((key.to_owned(), value.to_owned())),
        }
        self
    }

    /// `snapshot:` (e.g. [`STREAM_ONLY`], `{ mode: initial, chunk_rows: 100 }`).
    pub fn snapshot(self, value: &str) -> Pipeline {
        self.set("snapshot", value)
    }

    /// `pipeline:` (`{ max_batch_events: 64, max_batch_wait: 10ms }`).
    pub fn batching(self, value: &str) -> Pipeline {
        self.set("pipeline", value)
    }

    /// `retry:` (e.g. [`FAST_RETRY`]).
    pub fn retry(self, value: &str) -> Pipeline {
        self.set("retry", value)
    }

    /// `log:` (`{ level: info }`).
    pub fn log(self, value: &str) -> Pipeline {
        self.set("log", value)
    }

    /// Top-level YAML appended as it is, after everything else (keys not
    /// [`set`](Pipeline::set) otherwise).
    pub fn extra(mut self, yaml: &str) -> Pipeline {
        self.extra.push_str(yaml);
        self
    }

    /// The configuration file's text.
    pub fn yaml(&self) -> String {
        let mut y = format!(
            "name: {}\nsource:\n  url: {}\n  tables:\n",
            self.name,
            yaml_str(&self.url)
        );
        for t in &self.tables {
            y.push_str(&format!("    - {}\n", yaml_str(t)));
        }
        let create = |on: bool| match self.create {
            Some(_) => format!(", create: {on}"),
            None => String::new(),
        };
        let (create_publication, create_slot) = self.create.unwrap_or_default();
        if let Some(p) = &self.publication {
            y.push_str(&format!(
                "  publication: {{ name: {p}{} }}\n",
                create(create_publication)
            ));
        }
        if let Some(s) = &self.slot {
            let options = match self.slot_options.as_str() {
                "" => String::new(),
                o => format!(", {o}"),
            };
            y.push_str(&format!(
                "  slot: {{ name: {s}{}{options} }}\n",
                create(create_slot)
            ));
        }
        y.push_str(&self.source_lines);
        if !self.sinks.is_empty() {
            y.push_str("sinks:\n");
            for s in &self.sinks {
                y.push_str(s);
            }
        }
        for (k, v) in &self.sections {
            y.push_str(&format!("{k}: {v}\n"));
        }
        y.push_str(&self.extra);
        y
    }
}

/// One test's own publication and slot names.
#[derive(Debug, Clone)]
pub struct Names {
    pub publication: String,
    pub slot: String,
}

impl Names {
    /// `<prefix>_pub_<unique suffix>` and `<prefix>_slot_<unique suffix>`.
    pub fn unique(prefix: &str) -> Names {
        let s = crate::unique_suffix();
        Names {
            publication: format!("{prefix}_pub_{s}"),
            slot: format!("{prefix}_slot_{s}"),
        }
    }

    /// A stream-only pipeline named `name` of `tables` at `url`, through
    /// this publication and slot (created when missing), into one stdout
    /// sink, with [`FAST_RETRY`].
    pub fn stdout_pipeline(&self, name: &str, url: &str, tables: &[&str]) -> Pipeline {
        Pipeline::new(name, url)
            .tables(tables)
            .publication(&self.publication)
            .slot(&self.slot)
            .create(true, true)
            .sink("{ type: stdout }")
            .snapshot(STREAM_ONLY)
            .retry(FAST_RETRY)
    }
}

/// A pipeline config: `tables` as written in YAML (`public.t`,
/// `"S"."T"`), one file sink, and `snapshot` as a YAML flow mapping
/// (`{ mode: initial, chunk_rows: 100 }`).
pub fn pipeline_yaml(
    db: &TestDb,
    tables: &[&str],
    slot: &str,
    publication: &str,
    out: &Path,
    snapshot: &str,
) -> String {
    Pipeline::new("snapshot_test", db.url())
        .tables(tables)
        .publication(publication)
        .slot(slot)
        .create(true, true)
        .file_sink(out)
        .snapshot(snapshot)
        .retry(FAST_RETRY)
        .log("{ level: info }")
        .yaml()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_lands_where_it_belongs() {
        let y = Pipeline::new("n", "postgres://x/it's")
            .tables(&["public.t", "\"S\".\"T\""])
            .publication("p")
            .slot("s")
            .create(false, true)
            .slot_options("standby: true")
            .source_lines("  replica_identity: { public.t: full }\n")
            .sink("type: nats\nurl: 'nats://h'\nstream: { name: S }")
            .file_sink(Path::new("/tmp/o.jsonl"))
            .snapshot(STREAM_ONLY)
            .retry(FAST_RETRY)
            .snapshot("{ mode: initial }")
            .extra("metrics: { listen: '127.0.0.1:1' }\n")
            .yaml();
        assert_eq!(
            y,
            "name: n\nsource:\n  url: 'postgres://x/it''s'\n  tables:\n    - 'public.t'\n    \
             - '\"S\".\"T\"'\n  publication: { name: p, create: false }\n  \
             slot: { name: s, create: true, standby: true }\n  \
             replica_identity: { public.t: full }\nsinks:\n  - type: nats\n    url: 'nats://h'\n    \
             stream: { name: S }\n  - { type: file, path: '/tmp/o.jsonl' }\n\
             snapshot: { mode: initial }\nretry: { initial_backoff: 100ms, max_backoff: 1s }\n\
             metrics: { listen: '127.0.0.1:1' }\n"
        );
    }
}
