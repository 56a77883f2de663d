//! The operator's one error type.
//!
//! Every step of a reconcile returns [`Error`]; the controller's error policy logs it,
//! counts it and requeues the object with backoff. Errors a user causes (a spec the node
//! cannot run) are not errors here: they become status conditions.

/// What can go wrong while reconciling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The object lacks a field the API server always sets (name, namespace, uid).
    #[error("object has no {0}")]
    MissingField(&'static str),
    /// A value could not be rendered as YAML.
    #[error("rendering YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A value could not be rendered as JSON.
    #[error("rendering JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Adding or removing the finalizer, or the cleanup behind it, failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A short label for metrics (`strata_operator_reconcile_errors_total{error=...}`).
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::MissingField(_) => "missing_field",
            Error::Yaml(_) | Error::Json(_) => "render",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
