//! `/api/v1/parse_query`: the syntax tree of a query as JSON, in the shape of Prometheus 3's
//! endpoint (node `type`s `vectorSelector`, `matrixSelector`, `subquery`, `call`,
//! `aggregation`, `binaryExpr`, `unaryExpr`, `numberLiteral`, `stringLiteral`, `parenExpr`).
//! Objects are Go maps there, so keys come out sorted.

use axum::body::Bytes;
use axum::extract::RawQuery;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use lookout_model::Matcher;
use lookout_promql::{AtModifier, Expr, VectorMatchCardinality, VectorSelector};
use serde_json::{json, Value};

use crate::{encode, success, ApiError};

pub(crate) async fn parse_query(
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = crate::request_params(&method, &headers, query, &body);
    let text = params.get("query").unwrap_or_default();
    let expr = lookout_promql::parse(text)
        .map_err(|error| ApiError::invalid_param("query", crate::parse_error_text(text, &error)))?;
    Ok(success(encode::sort_keys(translate(&expr))))
}

/// One node and its children.
pub(crate) fn translate(expr: &Expr) -> Value {
    match expr {
        Expr::NumberLiteral(value) => json!({
            "type": "numberLiteral",
            "val": encode::format_float_fixed(*value),
        }),
        Expr::StringLiteral(value) => json!({"type": "stringLiteral", "val": value}),
        Expr::VectorSelector(selector) => {
            let mut node = selector_fields(selector);
            node["type"] = json!("vectorSelector");
            node
        }
        Expr::MatrixSelector(matrix) => {
            let mut node = selector_fields(&matrix.vector);
            node["type"] = json!("matrixSelector");
            node["range"] = json!(matrix.range_ms);
            node
        }
        Expr::Subquery(subquery) => {
            let (timestamp, start_or_end) = at_fields(subquery.at);
            json!({
                "type": "subquery",
                "expr": translate(&subquery.expr),
                "range": subquery.range_ms,
                "offset": subquery.offset.unwrap_or(0),
                "step": subquery.step_ms.unwrap_or(0),
                "timestamp": timestamp,
                "startOrEnd": start_or_end,
            })
        }
        Expr::Call(call) => json!({
            "type": "call",
            "func": {
                "name": call.func.name,
                "argTypes": call.func.arg_types.iter().map(|kind| kind.name()).collect::<Vec<_>>(),
                "variadic": call.func.variadic,
                "returnType": call.func.return_type.name(),
            },
            "args": call.args.iter().map(translate).collect::<Vec<_>>(),
        }),
        Expr::Aggregate(aggregate) => json!({
            "type": "aggregation",
            "op": aggregate.op.name(),
            "expr": translate(&aggregate.expr),
            "param": aggregate.param.as_deref().map_or(Value::Null, translate),
            "grouping": aggregate.grouping,
            "without": aggregate.without,
        }),
        Expr::Binary(binary) => {
            let matching = binary.matching.as_ref().map_or(Value::Null, |matching| {
                json!({
                    "card": match matching.card {
                        VectorMatchCardinality::OneToOne => "one-to-one",
                        VectorMatchCardinality::ManyToOne => "many-to-one",
                        VectorMatchCardinality::OneToMany => "one-to-many",
                        VectorMatchCardinality::ManyToMany => "many-to-many",
                    },
                    "labels": matching.labels,
                    "on": matching.on,
                    "include": matching.include,
                })
            });
            json!({
                "type": "binaryExpr",
                "op": binary.op.symbol(),
                "lhs": translate(&binary.lhs),
                "rhs": translate(&binary.rhs),
                "matching": matching,
                "bool": binary.return_bool,
            })
        }
        Expr::Unary(unary) => json!({
            "type": "unaryExpr",
            "op": unary.op.symbol(),
            "expr": translate(&unary.expr),
        }),
        Expr::Paren(inner) => json!({"type": "parenExpr", "expr": translate(inner)}),
    }
}

/// The fields a vector selector and a matrix selector share.
fn selector_fields(selector: &VectorSelector) -> Value {
    let (timestamp, start_or_end) = at_fields(selector.at);
    // Prometheus appends the matcher of a name written before the braces after the others.
    let mut matchers: Vec<&Matcher> = selector.matchers.iter().collect();
    if selector.name.is_some() && !matchers.is_empty() {
        let name_matcher = matchers.remove(0);
        matchers.push(name_matcher);
    }
    json!({
        "name": selector.name.as_deref().unwrap_or_default(),
        "offset": selector.offset.unwrap_or(0),
        "matchers": matchers
            .into_iter()
            .map(|matcher| json!({
                "name": matcher.name(),
                "type": matcher.kind().operator(),
                "value": matcher.value(),
            }))
            .collect::<Vec<_>>(),
        "timestamp": timestamp,
        "startOrEnd": start_or_end,
    })
}

/// `timestamp` (milliseconds or null) and `startOrEnd` (`"start"`, `"end"` or null).
fn at_fields(at: Option<AtModifier>) -> (Value, Value) {
    match at {
        None => (Value::Null, Value::Null),
        Some(AtModifier::Timestamp(millis)) => (json!(millis), Value::Null),
        Some(AtModifier::Start) => (Value::Null, json!("start")),
        Some(AtModifier::End) => (Value::Null, json!("end")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(query: &str) -> String {
        let mut out = String::new();
        encode::push_value(
            &mut out,
            &encode::sort_keys(translate(&lookout_promql::parse(query).unwrap())),
        );
        out
    }

    #[test]
    fn selectors_put_the_name_matcher_last() {
        assert_eq!(
            tree(r#"up{job="a"} offset 5m"#),
            r#"{"matchers":[{"name":"job","type":"=","value":"a"},{"name":"__name__","type":"=","value":"up"}],"name":"up","offset":300000,"startOrEnd":null,"timestamp":null,"type":"vectorSelector"}"#
        );
        assert_eq!(
            tree(r#"{__name__=~"u.*"}[5m] @ 10"#),
            r#"{"matchers":[{"name":"__name__","type":"=~","value":"u.*"}],"name":"","offset":0,"range":300000,"startOrEnd":null,"timestamp":10000,"type":"matrixSelector"}"#
        );
    }

    #[test]
    fn operators_and_literals() {
        assert_eq!(
            tree("1 + -2.5"),
            r#"{"bool":false,"lhs":{"type":"numberLiteral","val":"1"},"matching":null,"op":"+","rhs":{"type":"numberLiteral","val":"-2.5"},"type":"binaryExpr"}"#
        );
        assert_eq!(
            tree(r#"a / on(x) group_left(y) b"#),
            r#"{"bool":false,"lhs":{"matchers":[{"name":"__name__","type":"=","value":"a"}],"name":"a","offset":0,"startOrEnd":null,"timestamp":null,"type":"vectorSelector"},"matching":{"card":"many-to-one","include":["y"],"labels":["x"],"on":true},"op":"/","rhs":{"matchers":[{"name":"__name__","type":"=","value":"b"}],"name":"b","offset":0,"startOrEnd":null,"timestamp":null,"type":"vectorSelector"},"type":"binaryExpr"}"#
        );
        assert_eq!(
            tree(r#"("x")"#),
            r#"{"expr":{"type":"stringLiteral","val":"x"},"type":"parenExpr"}"#
        );
    }
}
