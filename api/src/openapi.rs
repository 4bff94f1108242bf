//! The checked-in OpenAPI document (`api/openapi.yaml`), compiled into the
//! daemon and served as JSON. A test keeps it and [`ROUTES`] in step.

use std::sync::OnceLock;

/// The document's YAML source.
pub const YAML: &str = include_str!("../openapi.yaml");

/// The document as JSON (parsed once).
pub fn document() -> Result<serde_json::Value, String> {
    static DOC: OnceLock<Result<serde_json::Value, String>> = OnceLock::new();
    DOC.get_or_init(|| serde_norway::from_str(YAML).map_err(|e| format!("api/openapi.yaml: {e}")))
        .clone()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::routes::ROUTES;

    const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let doc = document().unwrap_or_else(|e| panic!("{e}"));
        let paths = doc["paths"]
            .as_object()
            .unwrap_or_else(|| panic!("no paths in the document"));
        let documented: BTreeSet<(String, String)> = paths
            .iter()
            .flat_map(|(path, item)| {
                METHODS
                    .iter()
                    .filter(|m| item.get(**m).is_some())
                    .map(move |m| (m.to_string(), path.clone()))
            })
            .collect();
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(
            served.difference(&documented).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "served but not in api/openapi.yaml"
        );
        assert_eq!(
            documented.difference(&served).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "in api/openapi.yaml but not served"
        );
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document().unwrap_or_else(|e| panic!("{e}"));
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.trim_start_matches('#');
            assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
        }
    }

    #[test]
    fn every_link_names_an_operation() {
        let doc = document().unwrap_or_else(|e| panic!("{e}"));
        let (mut operations, mut linked) = (BTreeSet::new(), Vec::new());
        collect_operation_ids(&doc, false, &mut operations, &mut linked);
        assert!(!linked.is_empty());
        for id in linked {
            assert!(operations.contains(&id), "a link names no operation {id}");
        }
    }

    /// `operationId`s of operations into `ops`, and of links into `links`.
    fn collect_operation_ids(
        v: &serde_json::Value,
        in_links: bool,
        ops: &mut BTreeSet<String>,
        links: &mut Vec<String>,
    ) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("operationId", serde_json::Value::String(s)) if in_links => {
                            links.push(s.clone())
                        }
                        ("operationId", serde_json::Value::String(s)) => {
                            ops.insert(s.clone());
                        }
                        _ => collect_operation_ids(v, in_links || k == "links", ops, links),
                    }
                }
            }
            serde_json::Value::Array(a) => a
                .iter()
                .for_each(|v| collect_operation_ids(v, in_links, ops, links)),
            _ => {}
        }
    }

    fn collect_refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("$ref", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => collect_refs(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
