//! `GET /v1/openapi.json`: the HTTP API described in OpenAPI 3.0. The
//! end-to-end test `openapi_describes_the_real_routes` calls every path and
//! method listed here against a running gateway, so the description cannot
//! list a route that does not exist.

use axum::Json;
use serde_json::{json, Value};

/// (method, path, summary, body content type or "", security) of every route.
pub const ROUTES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "get",
        "/healthz",
        "Health of the dataplane and shards (200 ok / 503 down)",
        "",
        "",
    ),
    ("get", "/metrics", "Prometheus text metrics", "", ""),
    ("get", "/v1/openapi.json", "This description", "", ""),
    ("get", "/v1/rooms", "List rooms", "", "admin"),
    (
        "get",
        "/v1/cluster",
        "The pool of nodes (--cluster): each live node's id, state, addresses and load (404 in no pool, 503 when the pool's store does not answer)",
        "",
        "admin",
    ),
    (
        "post",
        "/v1/cluster/drain",
        "Stop new sessions on this node, for a rolling restart (/healthz: 503 draining)",
        "application/json",
        "admin",
    ),
    (
        "post",
        "/v1/rooms",
        "Create a room {\"name\"}",
        "application/json",
        "admin",
    ),
    (
        "get",
        "/v1/rooms/{room}",
        "A room's participants with live statistics",
        "",
        "admin",
    ),
    (
        "delete",
        "/v1/rooms/{room}",
        "Delete a room and end everything in it",
        "",
        "admin",
    ),
    (
        "post",
        "/v1/rooms/{room}/tokens",
        "Mint a room token {\"role\",\"ttl_s\",\"participant\"}",
        "application/json",
        "admin",
    ),
    (
        "get",
        "/v1/rooms/{room}/events",
        "Room events (SSE, or a WebSocket) for the operator; with a room token naming its participant, that participant's signalling WebSocket (participant list, events, messages)",
        "",
        "admin_or_token",
    ),
    (
        "post",
        "/v1/rooms/{room}/ingest/rtp",
        "Open an (S)RTP ingest",
        "application/json",
        "admin",
    ),
    (
        "post",
        "/v1/rooms/{room}/egress/rtp",
        "Open an (S)RTP egress",
        "application/json",
        "admin",
    ),
    (
        "delete",
        "/v1/rooms/{room}/ingest/{id}",
        "End an RTP ingest",
        "",
        "admin",
    ),
    (
        "delete",
        "/v1/rooms/{room}/egress/{id}",
        "End an RTP egress",
        "",
        "admin",
    ),
    (
        "delete",
        "/v1/rooms/{room}/participants/{id}",
        "Remove any participant",
        "",
        "admin",
    ),
    (
        "post",
        "/whip/{room}",
        "WHIP: publish with an SDP offer",
        "application/sdp",
        "token",
    ),
    ("options", "/whip/{room}", "CORS preflight", "", ""),
    (
        "post",
        "/whep/{room}",
        "WHEP: play with an SDP offer",
        "application/sdp",
        "token",
    ),
    ("options", "/whep/{room}", "CORS preflight", "", ""),
    (
        "patch",
        "/whip/{room}/{id}",
        "Trickle ICE (ICE-lite: accepted, nothing to do)",
        "application/trickle-ice-sdpfrag",
        "token",
    ),
    (
        "delete",
        "/whip/{room}/{id}",
        "End a WHIP session",
        "",
        "token",
    ),
    (
        "patch",
        "/whep/{room}/{id}",
        "Trickle ICE",
        "application/trickle-ice-sdpfrag",
        "token",
    ),
    (
        "delete",
        "/whep/{room}/{id}",
        "End a WHEP session",
        "",
        "token",
    ),
];

pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, content, security) in ROUTES {
        let mut op = json!({
            "summary": summary,
            "responses": {
                "default": {
                    "description": "Success, or an error {\"error\": \"...\"} with a 4xx/5xx status",
                }
            },
        });
        let params: Vec<Value> = ["room", "id"]
            .iter()
            .filter(|p| path.contains(&format!("{{{p}}}")))
            .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if !content.is_empty() {
            op["requestBody"] = json!({ "required": true, "content": { *content: { "schema": { "type": "string" } } } });
        }
        match *security {
            "admin" => op["security"] = json!([{ "admin": [] }]),
            "token" => op["security"] = json!([{ "roomToken": [] }, {}]),
            "admin_or_token" => op["security"] = json!([{ "admin": [] }, { "roomToken": [] }]),
            _ => {}
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "mediagw",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Rooms, WHIP/WHEP, RTP ingest and egress, tokens, events. Errors are {\"error\": \"...\"}.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "admin": { "type": "http", "scheme": "bearer", "description": "--admin-key" },
                "roomToken": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "POST /v1/rooms/{room}/tokens; required when --token-secret is set" },
            }
        }
    })
}

pub async fn openapi() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_a_valid_operation() {
        let d = super::document();
        assert_eq!(d["openapi"], "3.0.3");
        let n: usize = d["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(n, super::ROUTES.len(), "no route listed twice");
    }
}
