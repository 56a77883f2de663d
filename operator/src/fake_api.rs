//! A fake Kubernetes API server behind `tower-test`'s mock service, for reconcile scenarios.
//!
//! It keeps objects in memory by URL path and answers the calls the operator makes: get,
//! list (with a label selector), server-side apply (`application/apply-patch+yaml`, on the
//! object or its `/status`), JSON patch (the finalizer), merge patch, create (events) and
//! delete. It records every call, so a scenario asserts both on the state it leaves and on
//! how it was written (field manager, force). It is deliberately small: `resourceVersion` is checked
//! only on replace, and there is no admission; the CRD schema tests cover validation.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use parking_lot::Mutex;
use serde_json::{json, Value};

/// One request the operator made.
#[derive(Debug, Clone)]
pub struct Call {
    /// `GET`, `PATCH`...
    pub method: String,
    /// The URL path.
    pub path: String,
    /// The query string.
    pub query: String,
    /// The `Content-Type`.
    pub content_type: String,
    /// The JSON body, if any.
    pub body: Option<Value>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    calls: Vec<Call>,
    /// (method, path fragment, status code): the next matching call fails once.
    failures: Vec<(String, String, u16)>,
    /// (method, path fragment): matching calls are never answered.
    stalls: Vec<(String, String)>,
    next_uid: u64,
}

/// A handle on the fake server's state.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    /// A client talking to a new fake server (served on a task of the current runtime).
    pub fn start() -> (Client, FakeApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = FakeApi::default();
        let server = fake.clone();
        tokio::spawn(async move {
            // Answers to stalled calls are held here, never sent.
            let mut held = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                if server.stalls(&request) {
                    held.push(send);
                    continue;
                }
                let response = server.serve(request).await;
                send.send_response(response);
            }
        });
        (Client::new(service, "default"), fake)
    }

    /// Stores `object` at `path` as if created by a user (uid, generation 1).
    pub fn insert(&self, path: &str, mut object: Value) {
        let mut state = self.state.lock();
        state.next_uid += 1;
        let uid = format!("00000000-0000-4000-8000-{:012}", state.next_uid);
        let meta = &mut object["metadata"];
        meta["uid"] = json!(uid);
        if meta.get("generation").is_none() {
            meta["generation"] = json!(1);
        }
        meta["resourceVersion"] = json!("1");
        state.objects.insert(path.to_owned(), object);
    }

    /// The object at `path`.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().objects.get(path).cloned()
    }

    /// The object at `path`, typed.
    pub fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let value = self
            .get(path)
            .unwrap_or_else(|| panic!("no object at {path}"));
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Changes the object at `path` in place (a user's edit, or another controller's).
    pub fn edit(&self, path: &str, change: impl FnOnce(&mut Value)) {
        let mut state = self.state.lock();
        let object = state
            .objects
            .get_mut(path)
            .unwrap_or_else(|| panic!("no object at {path}"));
        change(object);
    }

    /// Deletes the object at `path` (another controller's delete, or a lost volume).
    pub fn delete(&self, path: &str) {
        self.state.lock().objects.remove(path);
    }

    /// Whether an object exists at `path`.
    pub fn exists(&self, path: &str) -> bool {
        self.state.lock().objects.contains_key(path)
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().calls.clone()
    }

    /// Forgets the calls so far.
    pub fn clear_calls(&self) {
        self.state.lock().calls.clear();
    }

    /// The bodies of the events created so far.
    pub fn events(&self) -> Vec<Value> {
        let state = self.state.lock();
        state
            .objects
            .iter()
            .filter(|(path, _)| path.starts_with("/apis/events.k8s.io/"))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Makes every later `method` call whose path contains `fragment` hang, unanswered.
    pub fn stall(&self, method: &str, fragment: &str) {
        self.state
            .lock()
            .stalls
            .push((method.to_owned(), fragment.to_owned()));
    }

    /// Whether `request` is to hang; a stalled call is recorded all the same.
    fn stalls(&self, request: &Request<Body>) -> bool {
        let path = request.uri().path();
        let mut state = self.state.lock();
        let stalled = state
            .stalls
            .iter()
            .any(|(m, f)| request.method().as_str() == m && path.contains(f.as_str()));
        if stalled {
            state.calls.push(Call {
                method: request.method().to_string(),
                path: path.to_owned(),
                query: request.uri().query().unwrap_or_default().to_owned(),
                content_type: String::new(),
                body: None,
            });
        }
        stalled
    }

    /// Makes the next `method` call whose path contains `fragment` fail with `code`.
    pub fn fail_next(&self, method: &str, fragment: &str, code: u16) {
        self.state
            .lock()
            .failures
            .push((method.to_owned(), fragment.to_owned(), code));
    }

    async fn serve(&self, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        let call = Call {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body,
        };
        let mut state = self.state.lock();
        state.calls.push(call.clone());
        let failure = state
            .failures
            .iter()
            .position(|(m, f, _)| *m == call.method && call.path.contains(f.as_str()));
        if let Some(i) = failure {
            let (_, _, code) = state.failures.remove(i);
            return status(code, "injected failure");
        }
        match handle(&mut state, &call) {
            Ok(value) => respond(StatusCode::OK, &value),
            Err((code, message)) => status(code, &message),
        }
    }
}

fn handle(state: &mut State, call: &Call) -> Result<Value, (u16, String)> {
    let path = call.path.as_str();
    let is_list = is_collection(path);
    match call.method.as_str() {
        "GET" if is_list => Ok(list(state, path, &call.query)),
        "GET" => state
            .objects
            .get(path)
            .cloned()
            .ok_or((404, format!("{path} not found"))),
        "POST" => {
            let mut object = call.body.clone().unwrap_or_default();
            let name = object["metadata"]["name"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("generated-{}", state.objects.len()));
            object["metadata"]["name"] = json!(name);
            state
                .objects
                .insert(format!("{path}/{name}"), object.clone());
            Ok(object)
        }
        "DELETE" => state
            .objects
            .remove(path)
            .map(|_| json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}))
            .ok_or((404, format!("{path} not found"))),
        "PATCH" => patch(state, call),
        "PUT" => {
            let old = state
                .objects
                .get(path)
                .ok_or((404, format!("{path} not found")))?;
            let version: u64 = old["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut object = call.body.clone().unwrap_or_default();
            // Optimistic concurrency, as the API server: a replace must carry the current
            // resourceVersion.
            if object["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
                return Err((409, format!("{path} was modified")));
            }
            object["metadata"]["resourceVersion"] = json!((version + 1).to_string());
            state.objects.insert(path.to_owned(), object.clone());
            Ok(object)
        }
        other => Err((405, format!("{other} is not served by the fake"))),
    }
}

/// Paths of collections have an even number of segments after the group/version prefix.
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.first() {
        Some(&"api") => &segments[2.min(segments.len())..],
        _ => &segments[3.min(segments.len())..],
    };
    // namespaces/<ns>/<plural>[/<name>[/status]]
    rest.len() == 3
}

fn list(state: &State, path: &str, query: &str) -> Value {
    let selector: Vec<(String, String)> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("labelSelector="))
        .flat_map(|s| {
            let decoded = s
                .replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/");
            decoded
                .split(',')
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let prefix = format!("{path}/");
    let items: Vec<Value> = state
        .objects
        .iter()
        .filter(|(p, _)| p.starts_with(&prefix) && !p[prefix.len()..].contains('/'))
        .filter(|(_, v)| {
            selector
                .iter()
                .all(|(k, want)| v["metadata"]["labels"][k].as_str() == Some(want.as_str()))
        })
        .map(|(_, v)| v.clone())
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
}

fn patch(state: &mut State, call: &Call) -> Result<Value, (u16, String)> {
    let (path, subresource) = match call.path.strip_suffix("/status") {
        Some(object) => (object.to_owned(), true),
        None => (call.path.clone(), false),
    };
    let body = call
        .body
        .clone()
        .ok_or((400, "patch without a JSON body".to_owned()))?;
    if call.content_type.starts_with("application/apply-patch") {
        let existing = state.objects.get(&path).cloned();
        let object = match (existing, subresource) {
            (Some(mut object), true) => {
                object["status"] = body["status"].clone();
                object
            }
            (None, true) => return Err((404, format!("{path} not found"))),
            (Some(mut object), false) => {
                let old = object.clone();
                merge_applied(&mut object, &body);
                if old["spec"] != object["spec"] {
                    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
                    object["metadata"]["generation"] = json!(generation + 1);
                }
                object
            }
            (None, false) => {
                let mut object = body.clone();
                state.next_uid += 1;
                object["metadata"]["uid"] = json!(format!("uid-{}", state.next_uid));
                object["metadata"]["generation"] = json!(1);
                object
            }
        };
        state.objects.insert(path, object.clone());
        return Ok(object);
    }
    let object = state
        .objects
        .get_mut(&path)
        .ok_or((404, format!("{path} not found")))?;
    if call.content_type.starts_with("application/json-patch") {
        let mut patched = object.clone();
        for op in body.as_array().into_iter().flatten() {
            json_patch_op(&mut patched, op)?;
        }
        *object = patched;
    } else {
        merge_applied(object, &body);
    }
    Ok(object.clone())
}

/// The part of server-side apply a scenario can see: top-level fields other than
/// `metadata` and `status` are replaced by the applied ones; labels and owner references
/// follow the applied metadata.
fn merge_applied(object: &mut Value, applied: &Value) {
    let Some(fields) = applied.as_object() else {
        return;
    };
    for (key, value) in fields {
        match key.as_str() {
            "status" => {}
            "metadata" => {
                for (k, v) in value.as_object().into_iter().flatten() {
                    if matches!(k.as_str(), "labels" | "ownerReferences" | "annotations") {
                        object["metadata"][k] = v.clone();
                    }
                }
            }
            _ => object[key] = value.clone(),
        }
    }
}

fn json_patch_op(target: &mut Value, op: &Value) -> Result<(), (u16, String)> {
    let path = op["path"].as_str().unwrap_or_default();
    let (parent_path, last) = path.rsplit_once('/').unwrap_or(("", path));
    let invalid = |why: &str| (422, format!("json patch {op}: {why}"));
    match op["op"].as_str() {
        Some("test") => {
            let found = target.pointer(path).cloned().unwrap_or(Value::Null);
            if found != op["value"] {
                return Err(invalid("test failed"));
            }
        }
        Some("add") => {
            let parent = target
                .pointer_mut(parent_path)
                .ok_or_else(|| invalid("no parent"))?;
            match parent {
                Value::Array(items) if last == "-" => items.push(op["value"].clone()),
                Value::Array(items) => {
                    let i: usize = last.parse().map_err(|_| invalid("bad index"))?;
                    items.insert(i.min(items.len()), op["value"].clone());
                }
                Value::Object(map) => {
                    map.insert(last.to_owned(), op["value"].clone());
                }
                _ => return Err(invalid("parent is not a container")),
            }
        }
        Some("remove") => {
            let parent = target
                .pointer_mut(parent_path)
                .ok_or_else(|| invalid("no parent"))?;
            match parent {
                Value::Array(items) => {
                    let i: usize = last.parse().map_err(|_| invalid("bad index"))?;
                    if i >= items.len() {
                        return Err(invalid("index out of range"));
                    }
                    items.remove(i);
                }
                Value::Object(map) => {
                    map.remove(last).ok_or_else(|| invalid("no such field"))?;
                }
                _ => return Err(invalid("parent is not a container")),
            }
        }
        _ => return Err(invalid("unsupported op")),
    }
    Ok(())
}

fn respond(code: StatusCode, value: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = code;
    response
}

fn status(code: u16, message: &str) -> Response<Body> {
    let reason = match code {
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        _ => "InternalError",
    };
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    respond(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &body,
    )
}
