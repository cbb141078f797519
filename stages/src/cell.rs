//! Live settings cells: shared resources that a string param names, where
//! the stages of a graph meet (one writes, another reads).

use std::sync::Arc;

use wzp_engine::prelude::*;

/// The cell of type `T` that param `param` names, or `None` when the name
/// is empty. The cell is the graph's shared resource of that name
/// ([`BuildContext::shared_resource`]: the control plane's if it inserted
/// one, else made on first use). `kind` names the type, with its article
/// ("an OpusLive"), for the error when the name is taken by a resource of
/// another type.
pub(crate) fn optional_cell<T: Default + Send + Sync + 'static>(
    cx: &BuildContext<'_>,
    p: &Params,
    param: &'static str,
    kind: &str,
) -> Result<Option<Arc<T>>, ParamError> {
    match p.str(param)? {
        "" => Ok(None),
        name => cx
            .shared_resource::<T>(name)
            .map(Some)
            .ok_or_else(|| wrong_type(param, name, kind)),
    }
}

/// A cell the control plane fills (the first hop's samples): the resource
/// it inserted under the name param `param` gives, `None` when the name is
/// empty or nothing was inserted (a cell made here would have no writer,
/// and the compiler would rightly warn about it).
pub(crate) fn control_cell<T: Send + Sync + 'static>(
    cx: &BuildContext<'_>,
    p: &Params,
    param: &'static str,
    kind: &str,
) -> Result<Option<Arc<T>>, ParamError> {
    match p.str(param)? {
        "" => Ok(None),
        name if !cx.has_resource(name) => Ok(None),
        name => cx
            .resource::<T>(name)
            .map(Some)
            .ok_or_else(|| wrong_type(param, name, kind)),
    }
}

/// The error for a cell name taken by a resource of another type.
fn wrong_type(param: &'static str, name: &str, kind: &str) -> ParamError {
    ParamError::new(
        param,
        format!(
            "the resource named {name:?} is not {kind} cell; pick another name or leave it empty"
        ),
    )
}
