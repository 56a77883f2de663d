//! A checker for the OpenAPI v3 subset Kubernetes accepts in a CRD, for the schema tests.
//!
//! Two questions, each answered the way the API server answers it:
//! - [`structural_problems`]: is the schema *structural* (every node typed, no `$ref`,
//!   `oneOf`/`anyOf`/`allOf`/`not`, `items` on arrays, never both `properties` and
//!   `additionalProperties`, no field kept unpruned)? The API server refuses a CRD that is not.
//! - [`value_problems`]: does an object pass the schema's types, `required`, `enum`, bounds,
//!   lengths and patterns, with no field the schema does not name? The API server would prune
//!   an unknown field silently; here it is an error, so a typo in a test fixture, an example
//!   or a chart is caught.
//!
//! Defaults are applied first (as the API server does). CEL rules are left to `kube-cel`.

use serde_json::{Map, Value};

const FORBIDDEN: [&str; 5] = ["$ref", "oneOf", "anyOf", "allOf", "not"];

/// Every way `schema` falls short of a structural schema, as `path: problem`.
pub fn structural_problems(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_schema(schema, "", &mut out);
    out
}

fn walk_schema(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        out.push(format!("{path}: schema is not an object"));
        return;
    };
    for key in FORBIDDEN {
        if node.contains_key(key) {
            out.push(format!(
                "{path}: `{key}` is not allowed in a structural schema"
            ));
        }
    }
    if node.contains_key("x-kubernetes-preserve-unknown-fields") {
        out.push(format!(
            "{path}: keeps unknown fields (nothing would be pruned)"
        ));
    }
    let int_or_string = node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let ty = node.get("type").and_then(Value::as_str);
    if ty.is_none() && !int_or_string {
        out.push(format!("{path}: no type"));
    }
    if node.contains_key("properties") && node.contains_key("additionalProperties") {
        out.push(format!("{path}: both properties and additionalProperties"));
    }
    if ty == Some("array") && !node.contains_key("items") {
        out.push(format!("{path}: array without items"));
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            walk_schema(sub, &format!("{path}.{name}"), out);
        }
    }
    if let Some(sub) = node.get("additionalProperties") {
        if sub.is_object() {
            walk_schema(sub, &format!("{path}.*"), out);
        }
    }
    if let Some(sub) = node.get("items") {
        walk_schema(sub, &format!("{path}[]"), out);
    }
}

/// Every way `object` (a whole custom resource) breaks `schema`, after defaulting.
pub fn value_problems(schema: &Value, object: &Value) -> Vec<String> {
    let mut object = object.clone();
    let mut out = Vec::new();
    // The API server owns these and validates them itself.
    if let Some(map) = object.as_object_mut() {
        for key in ["apiVersion", "kind", "metadata"] {
            map.remove(key);
        }
    }
    apply_defaults(schema, &mut object);
    check(schema, &object, "", &mut out);
    out
}

fn apply_defaults(schema: &Value, value: &mut Value) {
    if let (Some(props), Some(map)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object_mut(),
    ) {
        for (name, sub) in props {
            if !map.contains_key(name) {
                if let Some(default) = sub.get("default") {
                    map.insert(name.clone(), default.clone());
                }
            }
            if let Some(child) = map.get_mut(name) {
                apply_defaults(sub, child);
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array_mut()) {
        for item in list {
            apply_defaults(items, item);
        }
    }
}

fn check(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            out.push(format!("{path}: null is not allowed"));
        }
        return;
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let ty = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let type_ok = match ty {
        _ if int_or_string => value.is_string() || value.is_i64() || value.is_u64(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => false,
    };
    if !type_ok {
        out.push(format!("{path}: expected {ty}, got {value}"));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            out.push(format!("{path}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if n < min {
                out.push(format!("{path}: {n} is below the minimum {min}"));
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if n > max {
                out.push(format!("{path}: {n} is above the maximum {max}"));
            }
        }
    }
    if let Some(s) = value.as_str() {
        check_string(schema, s, path, out);
    }
    if let Some(map) = value.as_object() {
        check_object(schema, map, path, out);
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, item) in list.iter().enumerate() {
            check(items, item, &format!("{path}[{i}]"), out);
        }
    }
}

fn check_string(schema: &Value, s: &str, path: &str, out: &mut Vec<String>) {
    let len = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if len < min {
            out.push(format!("{path}: shorter than {min}"));
        }
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if len > max {
            out.push(format!("{path}: longer than {max}"));
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if re.is_match(s) => {}
            Ok(_) => out.push(format!("{path}: {s:?} does not match {pattern}")),
            Err(e) => out.push(format!("{path}: bad pattern {pattern}: {e}")),
        }
    }
}

fn check_object(schema: &Value, map: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(name) {
                out.push(format!("{path}.{name}: required"));
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let extra = schema.get("additionalProperties");
    for (name, child) in map {
        let sub_path = format!("{path}.{name}");
        match (props.and_then(|p| p.get(name)), extra) {
            (Some(sub), _) => check(sub, child, &sub_path, out),
            (None, Some(sub)) if sub.is_object() => check(sub, child, &sub_path, out),
            (None, Some(Value::Bool(true))) => {}
            _ => out.push(format!("{sub_path}: unknown field")),
        }
    }
}

/// Strings and lists without `maxLength` / `maxItems` below a node whose CEL rules compare
/// with `oldSelf`: the API server estimates a rule's cost from those bounds, and refuses a
/// CRD whose unbounded comparison could exceed its budget.
pub fn unbounded_under_transition_rules(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    find_rules(schema, "", &mut out);
    out
}

fn find_rules(schema: &Value, path: &str, out: &mut Vec<String>) {
    let transition = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|rule| rule["rule"].as_str().is_some_and(|r| r.contains("oldSelf")));
    if transition {
        unbounded(schema, path, out);
        return;
    }
    for (name, sub) in children(schema) {
        find_rules(sub, &format!("{path}{name}"), out);
    }
}

fn unbounded(schema: &Value, path: &str, out: &mut Vec<String>) {
    match schema.get("type").and_then(Value::as_str) {
        Some("string") if schema.get("maxLength").is_none() && schema.get("enum").is_none() => {
            out.push(format!("{path}: string without maxLength"));
        }
        Some("array") if schema.get("maxItems").is_none() => {
            out.push(format!("{path}: array without maxItems"));
        }
        _ => {}
    }
    for (name, sub) in children(schema) {
        unbounded(sub, &format!("{path}{name}"), out);
    }
}

fn children(schema: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        out.extend(props.iter().map(|(k, v)| (format!(".{k}"), v)));
    }
    if let Some(sub) = schema.get("additionalProperties").filter(|s| s.is_object()) {
        out.push((".*".to_owned(), sub));
    }
    if let Some(sub) = schema.get("items") {
        out.push(("[]".to_owned(), sub));
    }
    out
}
