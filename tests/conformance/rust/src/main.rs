//! Conformance sample for the Rust runtime (lambda_runtime): one handler, three outcomes.

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::{json, Value};

/// The handled error: reported through /invocation/{id}/error with this type.
#[derive(Debug)]
struct ConformanceError(String);

impl From<ConformanceError> for Diagnostic {
    fn from(e: ConformanceError) -> Diagnostic {
        Diagnostic { error_type: "ConformanceError".into(), error_message: e.0 }
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn handler(event: LambdaEvent<Value>) -> Result<Value, ConformanceError> {
    let (payload, ctx) = event.into_parts();
    let value = payload.get("value").cloned().unwrap_or(Value::Null);
    match payload.get("mode").and_then(Value::as_str) {
        Some("error") => return Err(ConformanceError(format!("handled: {}", value_text(&value)))),
        Some("exit") => {
            println!("exiting mid-invocation");
            std::process::exit(7);
        }
        _ => {}
    }
    let remaining = ctx.deadline().duration_since(std::time::SystemTime::now()).map(|d| d.as_millis()).unwrap_or(0);
    Ok(json!({
        "ric": "rust",
        "echo": value,
        "requestId": ctx.request_id,
        "functionName": ctx.env_config.function_name,
        "functionVersion": ctx.env_config.version,
        "memoryLimitInMB": ctx.env_config.memory,
        "invokedFunctionArn": ctx.invoked_function_arn,
        "remainingMs": remaining as u64,
    }))
}

fn main() -> Result<(), lambda_runtime::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(lambda_runtime::run(service_fn(handler)))
}
