"""``ModelRecord``: one registered model version, and loading it back: a torch module, or the fitted
scikit-learn pipeline of a ``sklearn`` artifact."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from trainengine.errors import RegistryError, TrainEngineError
from trainengine.registry._artifacts import (
    ArtifactStore,
    load_sklearn,
    load_weights,
    read_state_dict,
    sklearn_manifest,
)
from trainengine.registry._errors import RegistryValueError

__all__ = ["ModelRecord", "ModelStatus"]

ModelStatus = Literal["active", "archived"]


@dataclass(frozen=True)
class ModelRecord:
    """A registered model version as the registry knows it (a snapshot; re-read for fresh aliases).

    Attributes:
        model_id: ``"<name>:<version>"``.
        name: Model name (``"transformer-gpt"``).
        version: Semantic version (``"1.0.0"``).
        task_type: ``classification``, ``regression``, ``language_modeling``, ``vision`` or None.
        metrics: Metrics registered with the version (finite numbers); promotion gates read these.
        tags: Free labels given at registration.
        aliases: Aliases this version holds now (``("production",)``).
        artifact_path: The registered file or folder (in the registry's artifact store when copied).
            For a store at a URL, the local copy :meth:`fetch` downloads (``<cache_dir>/<sha256>``).
        artifact_kind: ``checkpoint``, ``run``, ``safetensors``, ``torch``, ``bundle`` or ``sklearn``
            (a fitted scikit-learn pipeline: :meth:`load` returns it).
        artifact_sha256: Content hash taken at registration; :meth:`load` checks it first.
        artifact_files: Files of a folder artifact covered by the hash (empty for one file).
        source_path: Where the artifact was registered from.
        run_id: The training run it came from, when known.
        git_commit: The code's git commit at training time, when known.
        data_fingerprint: Fingerprint of the training data, when known.
        config: The training configuration (a dict), when known.
        model_spec: ``{"architecture", "kwargs"}`` that rebuilds the model, when known.
        status: ``active`` or ``archived``.
        created_at: Registration time, ISO 8601 UTC.
        description: Free text.
        artifact_url: Where the artifact lives when the registry's store is a URL
            (``s3://bucket/models/name/1.0.0/<upload id>``); None for a local store.
    """

    model_id: str
    name: str
    version: str
    task_type: str | None
    metrics: dict[str, float]
    tags: tuple[str, ...]
    aliases: tuple[str, ...]
    artifact_path: Path
    artifact_kind: str
    artifact_sha256: str
    artifact_files: tuple[str, ...] = field(default=(), repr=False)
    source_path: str | None = None
    run_id: str | None = None
    git_commit: str | None = None
    data_fingerprint: str | None = None
    config: dict[str, Any] | None = field(default=None, repr=False)
    model_spec: dict[str, Any] | None = None
    status: ModelStatus = "active"
    created_at: str = ""
    description: str = ""
    artifact_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (paths as strings, tuples as lists).

        Example:
            >>> from pathlib import Path
            >>> rec = ModelRecord("m:1.0.0", "m", "1.0.0", None, {"acc": 0.9}, ("a",), (), Path("/x"), "torch", "ab")
            >>> rec.to_dict()["tags"], rec.to_dict()["artifact_path"]
            (['a'], '/x')
        """
        out = asdict(self)
        out["artifact_path"] = str(self.artifact_path)
        for key in ("tags", "aliases", "artifact_files"):
            out[key] = list(out[key])
        return json.loads(json.dumps(out, default=str))

    def fetch(self) -> Path:
        """The artifact as a local file or folder: :attr:`artifact_path`, downloaded first from a URL store.

        A download is hashed as it arrives and kept only when the hash is the registered one; an
        existing cached copy is used when it still hashes right.

        Raises:
            RegistryError: the artifact is missing or its content changed since registration.
        """
        if self.artifact_url is not None:
            ArtifactStore.fetch(
                self.artifact_url,
                self.artifact_path,
                self.artifact_kind,
                self.artifact_files,
                self.artifact_sha256,
                self.model_id,
            )
        return self.artifact_path

    def verify(self) -> None:
        """Check that the artifact is still what was registered (same SHA-256).

        An artifact of a URL store is downloaded first (:meth:`fetch`); then the local copy is checked.

        Raises:
            RegistryError: the artifact is missing or its content changed since registration.
        """
        if self.artifact_url is not None and ArtifactStore.fetch(
            self.artifact_url,
            self.artifact_path,
            self.artifact_kind,
            self.artifact_files,
            self.artifact_sha256,
            self.model_id,
        ):
            return  # downloaded just now, hashed on the way in
        ArtifactStore.verify(
            self.artifact_path, self.artifact_kind, self.artifact_files, self.artifact_sha256, self.model_id
        )

    def load(self, model: Any = None, map_location: Any = "cpu", *, trusted: Iterable[str] = ()) -> Any:
        """Load the registered model: a torch module in eval mode, or a fitted scikit-learn pipeline.

        The artifact's hash is checked first (downloaded first from a URL store). Torch weights
        are read with safetensors or ``torch.load(weights_only=True)`` only; a ``sklearn``
        artifact's ``model.skops`` is checked against its manifest and its types against the
        allow-list (classes of scikit-learn, numpy, scipy, plus ``trusted``) before skops builds
        anything (:func:`trainengine._skops.load_skops`). Nothing is ever unpickled.

        Args:
            model: A module to load the weights into; by default one is built from
                :attr:`model_spec` with :func:`trainengine.models.rebuild_model`. Torch kinds only.
            map_location: Device for the weights (and for the rebuilt model). Torch kinds only.
            trusted: Further type names a ``sklearn`` artifact's ``model.skops`` may hold
                (``["mypackage.MyTransformer"]``), each one checked by you. ``sklearn`` only.

        Returns:
            The ``torch.nn.Module``, in eval mode; for a ``sklearn`` artifact the fitted pipeline.

        Raises:
            RegistryError: the artifact changed or is missing, there is neither a spec nor a
                ``model``, or the weights do not fit the model; an option given for the other
                kind of model (:class:`RegistryValueError`); a scikit-learn export bundle (load
                it with ``trainengine.sklearn.load_registered_pipeline``).
            UntrustedModelError: a ``sklearn`` artifact holds types outside the allow-list and
                ``trusted`` (the message names them).

        Example:
            >>> import tempfile, torch
            >>> from trainengine.models import build_model
            >>> from trainengine.registry import ModelRegistry
            >>> folder = tempfile.mkdtemp()
            >>> net = build_model("mlp", input_dim=4, output_dim=2, hidden_dims=(8,))
            >>> torch.save(net.state_dict(), f"{folder}/weights.pt")
            >>> with ModelRegistry(f"{folder}/models.db") as registry:
            ...     mid = registry.register_model("tiny", "1.0.0", f"{folder}/weights.pt")
            ...     loaded = registry.get_model("tiny").load(
            ...         model=build_model("mlp", input_dim=4, output_dim=2, hidden_dims=(8,))
            ...     )
            >>> torch.equal(loaded(torch.ones(1, 4)), net.eval()(torch.ones(1, 4)))
            True
        """
        if self.artifact_kind == "sklearn":
            if model is not None:
                raise RegistryValueError(
                    f"{self.model_id} is a scikit-learn pipeline (kind 'sklearn'); model= is for torch weights — "
                    "call load() without it"
                )
            self.verify()
            return load_sklearn(self.artifact_path, trusted=trusted, model_id=self.model_id)
        if isinstance(trusted, str) or tuple(trusted):
            raise RegistryValueError(
                f"trusted= applies to scikit-learn artifacts only; {self.model_id} is a {self.artifact_kind} artifact "
                "of torch weights, read without unpickling anything"
            )
        self.verify()
        if self.artifact_kind == "bundle" and sklearn_manifest(self.artifact_path) is not None:
            raise RegistryError(
                f"{self.model_id} is a scikit-learn export bundle (kind 'bundle', format 'sklearn'): it holds no torch "
                "weights. Serve it with trainengine serve, load its pipeline with "
                "trainengine.sklearn.load_registered_pipeline(registry, ref), or register the run's model/ folder "
                "(kind 'sklearn', which load() returns as a pipeline)"
            )
        if model is None:
            if not self.model_spec:
                raise RegistryError(
                    f"{self.model_id} has no model spec (it was registered from a {self.artifact_kind} artifact "
                    "without one), so its architecture is unknown: "
                    "pass model= (a module of the right architecture) to load(), "
                    "or register with model_config={'architecture': ..., 'kwargs': {...}}"
                )
            from trainengine.models import rebuild_model

            try:
                model = rebuild_model(self.model_spec)
            except TrainEngineError as exc:
                raise RegistryError(f"cannot rebuild {self.model_id} from its model spec: {exc}") from exc
            model = model.to(map_location)
        state = read_state_dict(self.artifact_kind, self.artifact_path, map_location)
        try:
            load_weights(model, state)
        except TrainEngineError as exc:
            raise RegistryError(f"cannot load the weights of {self.model_id}: {exc}") from exc
        return model.eval()
