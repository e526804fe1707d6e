//! The OpenAPI description against the real server: every operation it
//! lists is routed (no "no such endpoint", no 405), and it is valid
//! OpenAPI 3.0 according to `openapi-spec-validator` (a third-party tool).

use e2e::*;

#[test]
fn openapi_describes_the_real_routes() {
    let gw = Gateway::start(1, &[]);
    let doc: Value = ureq::get(&format!("{}/v1/openapi.json", gw.api))
        .call()
        .expect("openapi.json is open")
        .into_json()
        .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let out = std::process::Command::new(aiortc_python())
        .args([
            "-c",
            "import json,sys; from openapi_spec_validator import validate; validate(json.load(sys.stdin)); print('valid')",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(doc.to_string().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 15, "{}", paths.len());
    let mut checked = 0;
    for (path, ops) in paths {
        let url = format!(
            "{}{}",
            gw.api,
            path.replace("{room}", "oa").replace("{id}", "1")
        );
        for (method, op) in ops.as_object().unwrap() {
            let content = op["requestBody"]["content"]
                .as_object()
                .and_then(|c| c.keys().next().cloned())
                .unwrap_or_else(|| "application/json".into());
            let r = ureq::request(&method.to_uppercase(), &url)
                .set("authorization", &format!("Bearer {ADMIN_KEY}"))
                .set("content-type", &content)
                .timeout(std::time::Duration::from_secs(5));
            // The events stream stays open: a 200 header is enough.
            let (code, body) = match r.send_string(if content == "application/json" {
                "{}"
            } else {
                ""
            }) {
                Ok(resp) if path.ends_with("/events") => (resp.status(), String::new()),
                Ok(resp) => (resp.status(), resp.into_string().unwrap_or_default()),
                Err(ureq::Error::Status(c, resp)) => (c, resp.into_string().unwrap_or_default()),
                Err(e) => panic!("{method} {path}: {e}"),
            };
            assert_ne!(code, 405, "{method} {path} is not routed for that method");
            assert!(
                !body.contains("no such endpoint"),
                "{method} {path} is described but not routed: {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked}");
    // Paths that are not described are not served either.
    let (code, v) = gw.get("/v1/nothing-here");
    assert_eq!(code, 404, "{v}");
}
