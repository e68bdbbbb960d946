//! A small checker for the structural OpenAPI v3 subset a CRD schema uses: types, `nullable`,
//! `enum`, numeric and length bounds, `pattern`, `required`, `properties` (unknown fields are
//! errors, as with kubectl's default strict field validation), `additionalProperties`, `items`,
//! `x-kubernetes-int-or-string` and `x-kubernetes-preserve-unknown-fields`.
//! Messages follow the API server's shape: `<path>: <problem>`.

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
                "{at}: Invalid value: must be of type {want}, not {got}"
            ));
            return;
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        errors.push(format!(
            "{at}: Unsupported value: {value}: supported values: {options:?}"
        ));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64()
            && n < min
        {
            errors.push(format!(
                "{at}: Invalid value: should be greater than or equal to {min}"
            ));
        }
        if let Some(max) = schema["maximum"].as_f64()
            && n > max
        {
            errors.push(format!(
                "{at}: Invalid value: should be less than or equal to {max}"
            ));
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if schema["minLength"].as_u64().is_some_and(|m| len < m) {
            errors.push(format!(
                "{at}: Invalid value: should be at least {} chars long",
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
                errors.push(format!("{at}: Invalid value: should match '{p}'"));
            }
        }
    }
    match value {
        Value::Object(map) => {
            for req in schema["required"].as_array().into_iter().flatten() {
                let key = req.as_str().unwrap_or_default();
                if !map.contains_key(key) {
                    errors.push(format!("{path}.{key}: Required value"));
                }
            }
            let props = schema["properties"].as_object();
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true);
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                if let Some(sub) = props.and_then(|p| p.get(key)) {
                    walk(sub, child, &child_path, errors);
                } else if schema["additionalProperties"].is_object() {
                    walk(&schema["additionalProperties"], child, &child_path, errors);
                } else if path.is_empty()
                    && matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    // The API server validates these itself; CRD schemas leave them out.
                } else if props.is_some() && !preserve {
                    errors.push(format!("{child_path}: unknown field \"{key}\""));
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
