//! The resource types served and how request paths map to them.

/// One served resource type.
pub(crate) struct ResourceType {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Whether `status` is a subresource (main-resource writes then keep the stored status).
    pub has_status: bool,
    /// A custom resource: served only while its CustomResourceDefinition
    /// (`<plural>.<group>`) is stored, with that CRD's schema rules (see `validation.rs`).
    pub custom: bool,
}

impl ResourceType {
    /// `apiVersion` of this type's objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` as used in the real API's error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const fn rt(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    has_status: bool,
) -> ResourceType {
    ResourceType {
        group,
        version,
        plural,
        kind,
        namespaced,
        has_status,
        custom: false,
    }
}

/// Every type the stand-in serves.
pub(crate) static RESOURCES: &[ResourceType] = &[
    rt(
        "resource.k8s.io",
        "v1",
        "resourceslices",
        "ResourceSlice",
        false,
        false,
    ),
    rt(
        "resource.k8s.io",
        "v1",
        "resourceclaims",
        "ResourceClaim",
        true,
        true,
    ),
    rt(
        "resource.k8s.io",
        "v1",
        "resourceclaimtemplates",
        "ResourceClaimTemplate",
        true,
        false,
    ),
    rt(
        "resource.k8s.io",
        "v1",
        "deviceclasses",
        "DeviceClass",
        false,
        false,
    ),
    rt("", "v1", "nodes", "Node", false, true),
    rt("", "v1", "pods", "Pod", true, true),
    rt("", "v1", "events", "Event", true, false),
    rt("events.k8s.io", "v1", "events", "Event", true, false),
    rt(
        "k8s.cni.cncf.io",
        "v1",
        "network-attachment-definitions",
        "NetworkAttachmentDefinition",
        true,
        false,
    ),
    rt(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        true,
    ),
    ResourceType {
        custom: true,
        ..rt(
            "multinetwork.networking.k8s.io",
            "v1alpha1",
            "podnetworks",
            "PodNetwork",
            false,
            true,
        )
    },
];

/// What a request path names.
pub(crate) enum Route {
    Version,
    CoreVersions,
    GroupList,
    /// `/api/v1` or `/apis/<group>/<version>`.
    ResourceList {
        group: String,
        version: String,
    },
    Resource(Target),
    NotFound,
}

/// A request on a resource type, a collection or one object.
pub(crate) struct Target {
    pub rtype: &'static ResourceType,
    /// `None` for cluster-scoped types and for lists across all namespaces.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    /// The resource as [`super::Faults`] names it: plural with an optional `/subresource`.
    pub fn fault_name(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.rtype.plural),
            None => self.rtype.plural.to_string(),
        }
    }
}

/// Maps a URL path to a [`Route`].
pub(crate) fn route(path: &str) -> Route {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["version"] => Route::Version,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::GroupList,
        ["api", version] => Route::ResourceList {
            group: String::new(),
            version: version.to_string(),
        },
        ["apis", group, version] => Route::ResourceList {
            group: group.to_string(),
            version: version.to_string(),
        },
        ["api", version, rest @ ..] => resource_route("", version, rest),
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest),
        _ => Route::NotFound,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Route {
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => {
            (Some(namespace.to_string()), rest)
        }
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return Route::NotFound,
    };
    let Some(rtype) = RESOURCES
        .iter()
        .find(|t| t.group == group && t.version == version && t.plural == plural)
    else {
        return Route::NotFound;
    };
    let scoped_right = match (rtype.namespaced, &namespace) {
        (false, Some(_)) => false,
        // A namespaced type without a namespace is only a list/watch across namespaces.
        (true, None) => name.is_none(),
        _ => true,
    };
    let sub_ok = match subresource.as_deref() {
        None => true,
        Some("status") => rtype.has_status,
        Some(_) => false,
    };
    if !scoped_right || !sub_ok {
        return Route::NotFound;
    }
    Route::Resource(Target {
        rtype,
        namespace,
        name,
        subresource,
    })
}
