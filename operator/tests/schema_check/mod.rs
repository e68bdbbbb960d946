//! A small checker for the structural OpenAPI v3 subset a CRD schema uses: types, `nullable`,
//! `enum`, numeric and length bounds, `pattern`, `required`, `properties` (unknown fields are
//! errors, as with kubectl's default strict field validation), `additionalProperties`, `items`,
//! `x-kubernetes-int-or-string` and `x-kubernetes-preserve-unknown-fields`.
//! Messages are the API server's (kube-apiserver v1.35, as tests/k8s/control-plane.sh sees them), so
//! a fixture's `# expect:` text holds offline and on the server.

use regex::Regex;
use serde_json::Value;

pub fn check(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    walk(schema, value, "", &mut errors);
    errors
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as the API server prints it in a message: strings quoted, numbers bare.
fn shown(v: &Value) -> String {
    v.to_string()
}

fn walk(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let at = if path.is_empty() { "<root>" } else { path };
    if value.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            errors.push(format!("{at}: Invalid value: null"));
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"] == Value::Bool(true) {
        if !matches!(type_name(value), "integer" | "string") {
            errors.push(format!(
                "{at}: Invalid value: must be an integer or a string"
            ));
        }
        return;
    }
    if let Some(want) = schema["type"].as_str() {
        let got = type_name(value);
        let ok = got == want || (want == "number" && got == "integer");
        if !ok {
            errors.push(format!(
                "{at}: Invalid value: \"{got}\": {at} in body must be of type {want}: \"{got}\""
            ));
            return;
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        let options: Vec<String> = options.iter().map(shown).collect();
        errors.push(format!(
            "{at}: Unsupported value: {value}: supported values: {}",
            options.join(", ")
        ));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64()
            && n < min
        {
            errors.push(format!(
                "{at}: Invalid value: {value}: {at} in body should be greater than or equal to {min}"
            ));
        }
        if let Some(max) = schema["maximum"].as_f64()
            && n > max
        {
            errors.push(format!(
                "{at}: Invalid value: {value}: {at} in body should be less than or equal to {max}"
            ));
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if schema["minLength"].as_u64().is_some_and(|m| len < m) {
            errors.push(format!(
                "{at}: Invalid value: {value}: {at} in body should be at least {} chars long",
                schema["minLength"]
            ));
        }
        if schema["maxLength"].as_u64().is_some_and(|m| len > m) {
            errors.push(format!(
                "{at}: Too long: may not be more than {} bytes",
                schema["maxLength"]
            ));
        }
        if let Some(p) = schema["pattern"].as_str() {
            let re = Regex::new(p).unwrap_or_else(|e| panic!("bad pattern {p:?} in schema: {e}"));
            if !re.is_match(s) {
                errors.push(format!(
                    "{at}: Invalid value: {value}: {at} in body should match '{p}'"
                ));
            }
        }
    }
    match value {
        Value::Object(map) => {
            for req in schema["required"].as_array().into_iter().flatten() {
                let key = req.as_str().unwrap_or_default();
                if !map.contains_key(key) {
                    errors.push(format!("{}: Required value", join(path, key)));
                }
            }
            let props = schema["properties"].as_object();
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true);
            for (key, child) in map {
                let child_path = join(path, key);
                if let Some(sub) = props.and_then(|p| p.get(key)) {
                    walk(sub, child, &child_path, errors);
                } else if schema["additionalProperties"].is_object() {
                    walk(&schema["additionalProperties"], child, &child_path, errors);
                } else if path.is_empty()
                    && matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    // The API server validates these itself; CRD schemas leave them out.
                } else if props.is_some() && !preserve {
                    // With kubectl's default (strict) field validation the server names the
                    // whole path.
                    errors.push(format!("unknown field \"{child_path}\""));
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter().enumerate() {
                walk(&schema["items"], item, &format!("{path}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

/// `spec` + `replicas` -> `spec.replicas`: the server's paths have no leading dot.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}
