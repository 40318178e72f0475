"""``ModelRegistry``: versioned models with lineage, aliases, promotion gates and rollback.

Why one module of this length: ModelRegistry is one public class (register / promote / gates /
rollback / archive / resolve / list / history) over one schema; the SQL plumbing is SqlStore's,
artifacts are the ArtifactStore's.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import delete, func, insert, select, true, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from trainengine._sql import (
    SqlStore,
    check_versioned_schema,
    init_versioned_schema,
    inserted_id,
    resolve_database,
)
from trainengine._storage import is_url
from trainengine.errors import RegistryError
from trainengine.registry import _schema as S
from trainengine.registry._artifacts import ArtifactStore, inspect_source
from trainengine.registry._errors import ModelNotFoundError, PromotionGateError, RegistryValueError
from trainengine.registry._gates import (
    Gate,
    SignificanceRule,
    SignificanceTest,
    SignificanceVerdict,
    evaluate_gates,
    parse_gates,
    parse_significance_rules,
)
from trainengine.registry._record import ModelRecord
from trainengine.registry._refs import check_name, check_version, model_id_of, parse_model_ref, version_key
from trainengine.registry._validate import (
    check_metrics,
    check_source_task,
    check_tags,
    check_task_type,
    did_you_mean,
    dumps_json,
    iso_time,
    spec_from_model_config,
)

__all__ = ["ModelRegistry"]

T = TypeVar("T")
_ACTIVE = "active"
_ARCHIVED = "archived"


class ModelRegistry(SqlStore):
    """Registered model versions with their lineage, aliases (``production``...), gates and history.

    Args:
        path_or_url: A SQLite file (created with its folder; several processes may share it) or a
            SQLAlchemy URL such as ``postgresql://user@host/registry`` for a team server.
        artifact_root: Folder that receives a copy of every registered artifact
            (``<artifact_root>/<name>/<version>/``); default ``<stem>-artifacts/`` next to a SQLite
            file (``models.db`` -> ``models-artifacts/``). Required with a server URL. May be an
            fsspec URL (``s3://bucket/models``, ``gs://...``, ``memory://...``, ``file://...``):
            artifacts are then uploaded there and downloaded into ``cache_dir`` to be read, their
            hashes checked both ways (see :class:`~trainengine.registry.ArtifactStore`).
        gates: Promotion gates ``{alias: {metric: "<= 0.40"}}``; a promotion to ``alias`` must meet
            every bound (operators ``<=``, ``<``, ``>=``, ``>``, ``==``) unless forced.
        require_significant: Aliases whose promotions must beat the current holder in a paired
            bootstrap on the same data, ``{alias: {"metric": "accuracy", "confidence": 0.95,
            "n_bootstrap": 1000}}`` (every key optional): :meth:`promote_model` refuses such a
            promotion unless it is given a ``significance=`` test that says the candidate is
            better (or is forced). An alias without a holder is promoted without a test.
        busy_timeout_s: How long one SQLite write waits for another process's lock before retrying.
        max_retries: Retries of a write that still found the database locked.
        read_only: Open an existing registry for reading only (``list``, ``show``, ``history``):
            nothing is created — a missing SQLite file or a database without the registry's
            tables raises :class:`RegistryError` — and every write is refused.
        cache_dir: Where artifacts of a URL ``artifact_root`` are downloaded to (default
            ``$TRAINENGINE_CACHE/artifacts``, else ``~/.cache/trainengine/artifacts``).

    Attributes:
        store: The :class:`~trainengine.registry._artifacts.ArtifactStore` under ``artifact_root``
            (put / get / verify / delete of the registered copies).

    Raises:
        RegistryError: the database cannot be opened, a server URL comes without ``artifact_root``,
            or a gate is malformed (its dotted path is named).

    Example:
        >>> import tempfile, torch
        >>> folder = tempfile.mkdtemp()
        >>> torch.save(torch.nn.Linear(4, 2).state_dict(), f"{folder}/weights.pt")
        >>> registry = ModelRegistry(f"{folder}/models.db", gates={"production": {"val_loss": "<= 0.40"}})
        >>> model_id = registry.register_model("linear", "1.0.0", f"{folder}/weights.pt", metrics={"val_loss": 0.38})
        >>> registry.promote_model(model_id, "production").aliases
        ('production',)
        >>> registry.get_model(tag="production").model_id
        'linear:1.0.0'
        >>> registry.close()
    """

    _kind = "model registry"
    _error = RegistryError

    def __init__(
        self,
        path_or_url: str | os.PathLike[str] = "models.db",
        *,
        artifact_root: str | os.PathLike[str] | None = None,
        gates: Mapping[str, Mapping[str, str]] | None = None,
        require_significant: Mapping[str, Mapping[str, Any]] | None = None,
        busy_timeout_s: float = 30.0,
        max_retries: int = 10,
        read_only: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        try:
            self._gates: dict[str, list[Gate]] = parse_gates(gates)
        except ValueError as exc:
            raise RegistryValueError(str(exc)) from None
        self.gates: dict[str, dict[str, str]] = {a: dict(c) for a, c in (gates or {}).items()}
        try:
            self._significance: dict[str, SignificanceRule] = parse_significance_rules(require_significant)
        except ValueError as exc:
            raise RegistryValueError(str(exc)) from None
        self.require_significant: dict[str, dict[str, Any]] = {
            a: dict(r) for a, r in (require_significant or {}).items()
        }
        database = resolve_database(
            path_or_url,
            kind=self._kind,
            example="models.db",
            error=RegistryError,
            value_error=RegistryValueError,
            create=not read_only,
        )
        self._label = database.label
        if is_url(artifact_root):
            self.artifact_root: Path | str | None = str(artifact_root)  # an fsspec URL (s3://, gs://, memory://)
        elif artifact_root is not None:
            self.artifact_root = Path(artifact_root).expanduser().resolve()
        elif database.sqlite_file is not None:
            file = database.sqlite_file.resolve()
            self.artifact_root = file.with_name(f"{file.stem}-artifacts")
        elif not database.is_sqlite:
            raise RegistryError(
                f"model registry {self._label!r} is a server database: give artifact_root= (a folder every user of the "
                "registry can read, e.g. a shared mount) for the registered artifacts"
            )
        else:
            self.artifact_root = None  # in memory: only copy_artifact=False registrations
        self.store = ArtifactStore(self.artifact_root, cache_dir=cache_dir)
        self._connect(database, busy_timeout_s=busy_timeout_s, max_retries=max_retries, read_only=read_only)

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> ModelRegistry:
        """Open the registry a training config's ``registry`` section describes.

        Args:
            config: A :class:`~trainengine.config.TrainingConfig`, its ``registry`` section, or a
                dict of either.
            **overrides: Keyword arguments of :class:`ModelRegistry` that win over the config.

        Example:
            >>> import tempfile
            >>> from trainengine.config import TrainingConfig
            >>> cfg = TrainingConfig(
            ...     registry={"url": f"{tempfile.mkdtemp()}/models.db", "gates": {"production": {"accuracy": ">= 0.9"}}}
            ... )
            >>> ModelRegistry.from_config(cfg).gates
            {'production': {'accuracy': '>= 0.9'}}
        """
        section: Any = getattr(config, "registry", None)
        if section is None and isinstance(config, Mapping):
            section = config.get("registry", config)
        if section is None:
            section = config
        if isinstance(section, Mapping):
            from trainengine.config import RegistrySection

            section = RegistrySection(**section)
        for attr in ("url", "artifact_root", "gates"):
            if not hasattr(section, attr):
                raise RegistryValueError(
                    f"from_config needs a TrainingConfig or its registry section, got {type(config).__name__}"
                )
        kwargs: dict[str, Any] = {
            "artifact_root": section.artifact_root,
            "gates": section.gates,
            "require_significant": getattr(section, "require_significant", None) or None,
        }
        kwargs.update(overrides)
        return cls(section.url, **kwargs)

    # -- database plumbing (shared with ExperimentDB through SqlStore) ------------------------------
    def _init_schema(self, conn: Connection) -> None:
        init_versioned_schema(
            conn, S.metadata, S.schema_version, S.SCHEMA_VERSION, kind=self._kind, error=RegistryError
        )

    def _check_schema(self, conn: Connection) -> None:
        check_versioned_schema(
            conn,
            S.metadata,
            S.schema_version,
            S.SCHEMA_VERSION,
            kind=self._kind,
            label=self._label,
            error=RegistryError,
        )

    def _retry_if(self, exc: DBAPIError, what: str) -> bool:
        # Besides a fresh schema created by several processes at once: on a server database two
        # writers racing for a new alias row; the loser retries and sees the winner's row.
        return super()._retry_if(exc, what) or (
            isinstance(exc, IntegrityError) and "registry_aliases" in str(exc).lower()
        )

    def _failure(self, exc: DBAPIError, still_locked: bool, what: str, conflict: str | None) -> Exception:
        # Only a race for one (name, version) row gets the conflict message (a server database).
        if conflict is not None and not (isinstance(exc, IntegrityError) and "registry_models" in str(exc).lower()):
            conflict = None
        return super()._failure(exc, still_locked, what, conflict)

    # -- rows -> records -----------------------------------------------------------------------------
    def _artifact_path(self, row: Any) -> Path:
        return self.store.get(
            row.artifact_path,
            in_store=bool(row.artifact_in_store),
            model_id=f"{row.name}:{row.version}",
            sha256=row.artifact_sha256,
            kind=row.artifact_kind,
        )

    def _records(self, conn: Connection, rows: Sequence[Any]) -> list[ModelRecord]:
        pks = [r.model_pk for r in rows]
        tag_map: dict[int, list[str]] = {pk: [] for pk in pks}
        alias_map: dict[int, list[str]] = {pk: [] for pk in pks}
        if pks:
            for t in conn.execute(
                select(S.tags.c.model_pk, S.tags.c.tag)
                .where(S.tags.c.model_pk.in_(pks))
                .order_by(S.tags.c.model_pk, S.tags.c.position)
            ):
                tag_map[t.model_pk].append(t.tag)
            for a in conn.execute(
                select(S.aliases.c.model_pk, S.aliases.c.alias)
                .where(S.aliases.c.model_pk.in_(pks))
                .order_by(S.aliases.c.alias)
            ):
                alias_map[a.model_pk].append(a.alias)
        return [
            ModelRecord(
                model_id=model_id_of(r.name, r.version),
                name=r.name,
                version=r.version,
                task_type=r.task_type,
                metrics=json.loads(r.metrics_json),
                tags=tuple(tag_map[r.model_pk]),
                aliases=tuple(alias_map[r.model_pk]),
                artifact_path=self._artifact_path(r),
                artifact_url=self.store.url(r.artifact_path, in_store=bool(r.artifact_in_store)),
                artifact_kind=r.artifact_kind,
                artifact_sha256=r.artifact_sha256,
                artifact_files=tuple(json.loads(r.artifact_files_json)),
                source_path=r.source_path,
                run_id=r.run_id,
                git_commit=r.git_commit,
                data_fingerprint=r.data_fingerprint,
                config=json.loads(r.config_json) if r.config_json else None,
                model_spec=json.loads(r.model_spec_json) if r.model_spec_json else None,
                status=r.status,
                created_at=iso_time(r.created_at),
                description=r.description,
            )
            for r in rows
        ]

    @staticmethod
    def _rows_of(conn: Connection, name: str) -> list[Any]:
        return sorted(
            conn.execute(select(S.models).where(S.models.c.name == name)).all(), key=lambda r: version_key(r.version)
        )

    @staticmethod
    def _names(conn: Connection) -> list[str]:
        return sorted(conn.execute(select(S.models.c.name).distinct()).scalars())

    def _require_name(self, conn: Connection, name: str) -> list[Any]:
        rows = self._rows_of(conn, name)
        if not rows:
            names = self._names(conn)
            listing = f"registered: {', '.join(names)}" if names else "the registry is empty"
            raise ModelNotFoundError(
                f"no model named {name!r} in registry {self._label!r}{did_you_mean(name, names)} — {listing}"
            )
        return rows

    def _find_row(self, conn: Connection, name: str, version: str | None, alias: str | None) -> Any:
        rows = self._require_name(conn, name)
        if version is not None:
            match = [r for r in rows if r.version == version]
            if not match:
                raise ModelNotFoundError(
                    f"no version {version!r} of model {name!r} — registered versions: "
                    f"{', '.join(r.version for r in reversed(rows))}"
                )
            return match[0]
        if alias is not None:
            pk = conn.execute(
                select(S.aliases.c.model_pk).where(S.aliases.c.name == name, S.aliases.c.alias == alias)
            ).scalar()
            if pk is None:
                held = sorted(conn.execute(select(S.aliases.c.alias).where(S.aliases.c.name == name)).scalars())
                listing = (
                    f"its aliases: {', '.join(held)}" if held else "it holds no alias yet (promote_model sets one)"
                )
                raise ModelNotFoundError(
                    f"model {name!r} has no alias {alias!r}{did_you_mean(alias, held)} — {listing}"
                )
            return next(r for r in rows if r.model_pk == pk)
        active = [r for r in rows if r.status == _ACTIVE]
        if not active:
            raise ModelNotFoundError(
                f"every version of model {name!r} is archived ({', '.join(r.version for r in rows)}); ask for one by "
                "version"
            )
        return active[-1]

    def _target(self, model: Any) -> tuple[str, str | None, str | None]:
        """``(name, version, alias)`` of a ModelRecord or a ``name:version`` / ``name@alias`` reference."""
        if isinstance(model, ModelRecord):
            return model.name, model.version, None
        name, version, alias = parse_model_ref(model)
        if version is None and alias is None:
            raise RegistryValueError(
                f"{model!r} names no version: give 'name:version' (as register_model returns) or 'name@alias'"
            )
        return name, version, alias

    # -- registering ---------------------------------------------------------------------------------
    def register_model(
        self,
        name: str,
        version: str,
        checkpoint_path: str | os.PathLike[str] | None = None,
        task_type: str | None = None,
        metrics: Mapping[str, float] | None = None,
        run_id: str | None = None,
        tags: list[str] | None = None,
        *,
        bundle_path: str | os.PathLike[str] | None = None,
        model_config: Any = None,
        description: str = "",
        copy_artifact: bool = True,
    ) -> str:
        """Register a new model version; its artifact is copied into the registry's store.

        Args:
            name: Model name: letters, digits, ``.``, ``_``, ``-`` (no ``/`` or ``..``).
            version: Semantic version ``MAJOR.MINOR.PATCH[-PRERELEASE]``; never overwritten.
            checkpoint_path: A checkpoint folder (``ckpt-*``), a run directory, a ``.safetensors``
                file or a ``.pt``/``.pth``/``.bin`` state dict (read with ``weights_only=True``);
                or a fitted scikit-learn pipeline: a SklearnTrainer run directory or its ``model/``
                folder (kind ``sklearn``: the files its manifest lists, checked against it; loaded
                back by :meth:`ModelRecord.load` through the skops trusted-types check).
            task_type: ``classification``, ``regression``, ``language_modeling`` or ``vision``;
                default: what the checkpoint, run or bundle says.
            metrics: Finite numbers (gates read them); default: the finite metrics the checkpoint
                or run recorded.
            run_id: The training run; default: read from the checkpoint, run or bundle.
            tags: Labels for :meth:`get_model` (``tag=``) and listing.
            bundle_path: An export bundle folder instead of ``checkpoint_path`` (its manifest's
                file hashes are checked).
            model_config: How to rebuild the model when the artifact does not say: a
                :class:`~trainengine.models.GPTConfig` or ``{"architecture": ..., "kwargs": {...}}``.
            description: Free text.
            copy_artifact: Copy the artifact into ``<artifact_root>/<name>/<version>/`` so that
                checkpoint rotation cannot delete it; False records the path as it is.

        Returns:
            The model id ``"<name>:<version>"``.

        Raises:
            RegistryError: the version exists already, the artifact is missing, incomplete or fails
                its manifest, or an argument is invalid (:class:`RegistryValueError`).
        """
        name, version = check_name(name), check_version(version)
        task_type = check_task_type(task_type)
        given_metrics = check_metrics(metrics)
        tag_list = check_tags(tags)
        if not isinstance(description, str):
            raise RegistryValueError(f"description must be a string, got {type(description).__name__}")
        if run_id is not None and (
            not isinstance(run_id, (str, int)) or isinstance(run_id, bool) or not str(run_id).strip()
        ):
            raise RegistryValueError(f"run_id must be a non-empty string, got {run_id!r}")
        spec = spec_from_model_config(model_config)
        if self._engine is None:
            raise RegistryError(f"ModelRegistry({self._label!r}) is closed; open a new one")
        model_id = model_id_of(name, version)
        source = inspect_source(checkpoint_path, bundle_path)
        if source.kind == "sklearn" and spec is not None:
            raise RegistryValueError(
                f"model_config= tells how to rebuild a torch model; {str(source.path)!r} is a fitted scikit-learn "
                "pipeline (kind 'sklearn'), which is loaded as it was saved: register it without model_config="
            )
        self._read(lambda conn: self._refuse_existing(conn, name, version))  # before any copying
        if source.kind in ("bundle", "sklearn") and not copy_artifact:
            # Kept in place: loading checks the folder against its manifest, which refuses unlisted files.
            listed = set(source.files)
            extra = sorted(
                rel
                for p in source.path.rglob("*")
                if p.is_file()
                and "__pycache__" not in p.parts
                and (rel := p.relative_to(source.path).as_posix()) not in listed
            )
            if extra:
                what = "scikit-learn model" if source.kind == "sklearn" else "bundle"
                raise RegistryError(
                    f"{what} {str(source.path)!r} holds files its manifest does not list ({', '.join(extra[:5])}); "
                    "remove them, or register with copy_artifact=True (only the listed files are copied)"
                )

        placement = self.store.put(source, name, version, copy=copy_artifact)
        try:
            row = {
                "name": name,
                "version": version,
                "status": _ACTIVE,
                "task_type": task_type or check_source_task(source.task_type),
                "metrics_json": json.dumps(given_metrics if given_metrics is not None else source.metrics),
                "description": description,
                "artifact_kind": source.kind,
                "artifact_path": placement.stored_path,
                "artifact_in_store": placement.in_store,
                "artifact_files_json": json.dumps(sorted(source.files)),
                "artifact_sha256": placement.sha256,
                "source_path": str(source.path),
                "run_id": str(run_id) if run_id is not None else source.run_id,
                "git_commit": source.git_commit,
                "data_fingerprint": source.data_fingerprint,
                "config_json": dumps_json(source.config),
                "model_spec_json": dumps_json(spec or source.model_spec),
                "created_at": time.time(),
            }

            def insert_row(conn: Connection) -> None:
                self._refuse_existing(conn, name, version)
                pk = inserted_id(conn.execute(insert(S.models).values(**row)))
                if tag_list:
                    conn.execute(
                        insert(S.tags), [{"model_pk": pk, "tag": t, "position": i} for i, t in enumerate(tag_list)]
                    )
                # Move the copy into place while holding the write lock and owning the (name, version)
                # row: whatever sits at the final path now is a leftover of a crashed registration.
                # (A retried transaction finds its copy already there.)
                placement.commit()

            try:
                self._write(
                    insert_row,
                    what="register a model in",
                    conflict=(
                        f"{model_id} is already registered; versions are never overwritten — register a new version"
                    ),
                )
            except BaseException:
                placement.abort()  # the row was rolled back: nothing may point at our copy
                raise
        finally:
            placement.cleanup()
        return model_id

    def _refuse_existing(self, conn: Connection, name: str, version: str) -> None:
        # Names differing only in case would share one artifact folder where the file system
        # ignores case (macOS, Windows): one registration could then replace the other's files.
        clash = conn.execute(
            select(S.models.c.name).where(func.lower(S.models.c.name) == name.lower(), S.models.c.name != name).limit(1)
        ).scalar()
        if clash is not None:
            raise RegistryValueError(
                f"model name {name!r} differs from the registered {clash!r} only in case; use {clash!r} or another name"
            )
        row = conn.execute(
            select(S.models.c.created_at).where(S.models.c.name == name, S.models.c.version == version)
        ).first()
        if row is not None:
            raise RegistryError(
                f"{model_id_of(name, version)} is already registered (at {iso_time(row.created_at)}); "
                "versions are never overwritten — register a new version, e.g. a higher patch number"
            )

    # -- aliases ---------------------------------------------------------------------------------------
    def check_gates(self, model_id: str | ModelRecord, alias: str) -> list[str]:
        """The gates of ``alias`` that ``model_id`` fails, one line each (``[]``: it may be promoted).

        Example:
            >>> reg = ModelRegistry(":memory:", gates={"production": {"val_loss": "<= 0.4"}})
            >>> import tempfile, torch
            >>> f = f"{tempfile.mkdtemp()}/w.pt"
            >>> torch.save({"w": torch.ones(1)}, f)
            >>> mid = reg.register_model("m", "1.0.0", f, metrics={"val_loss": 0.5}, copy_artifact=False)
            >>> reg.check_gates(mid, "production")
            ['val_loss = 0.5 fails the gate <= 0.4']
        """
        name, version, via = self._target(model_id)
        record = self.get_model(name, version, alias=via)
        return evaluate_gates(self._gates.get(check_name(alias, "alias"), []), record.metrics)

    def promote_model(
        self,
        model_id: str | ModelRecord,
        alias: str,
        *,
        force: bool = False,
        reason: str | None = None,
        significance: SignificanceTest | None = None,
    ) -> ModelRecord:
        """Give ``alias`` to a version (moving it from its previous holder); recorded in the history.

        Args:
            model_id: ``"name:version"`` (what :meth:`register_model` returns), ``"name@alias"``
                (e.g. promote what ``staging`` holds) or a :class:`ModelRecord`.
            alias: Any name (``production``, ``staging``, ``canary``); one holder per model name.
            force: Promote even when the alias's gates or the significance test fail; recorded as forced.
            reason: Free text kept in the history.
            significance: A test comparing the candidate with the alias's current holder on the same
                data (``trainengine.evaluation.SignificanceCheck(...)``), called with the alias's
                ``require_significant`` rule (its defaults when none is configured) before anything
                is written; the promotion goes ahead only when it says the candidate is better.
                Needed when the alias has a ``require_significant`` rule and a holder. Its verdict
                is kept in the history (``details["significance"]``).

        Returns:
            The promoted version (with its aliases now).

        Raises:
            PromotionGateError: a gate failed (each failing metric, its value and the bound are named),
                or the candidate is not significantly better than the holder (both values with their
                confidence intervals and the p-value are named), or the alias needs a significance
                test and none was given.
            RegistryError: the version is archived or does not exist, or the alias changed hands
                while the significance test ran.
        """
        name, version, via = self._target(model_id)
        alias = check_name(alias, "alias")
        if reason is not None and not isinstance(reason, str):
            raise RegistryValueError(f"reason must be a string, got {type(reason).__name__}")
        gates = self._gates.get(alias, [])
        # The test loads two models and evaluates them: run it before the write transaction (which
        # holds the database's write lock), then promote only if the holder it beat still holds.
        tested = self._test_significance(name, version, via, alias, gates, force=force, significance=significance)

        def promote(conn: Connection) -> ModelRecord:
            row = self._find_row(conn, name, version, via)
            target = model_id_of(row.name, row.version)
            if row.status != _ACTIVE:
                raise RegistryError(
                    f"cannot promote {target} to {alias!r}: it is archived; register a new version instead"
                )
            failures = evaluate_gates(gates, json.loads(row.metrics_json))
            if failures and not force:
                raise PromotionGateError(
                    f"cannot promote {target} to {alias!r}: {'; '.join(failures)} — improve the model, change the "
                    f"gates of {alias!r}, or pass force=True / --force (recorded in the history)",
                    failures,
                )
            current = conn.execute(
                select(S.aliases.c.model_pk)
                .where(S.aliases.c.name == name, S.aliases.c.alias == alias)
                .with_for_update()
            ).scalar()
            if tested is not None and current != tested[0] and current != row.model_pk:
                raise RegistryError(
                    f"cannot promote {target} to {alias!r}: the alias changed hands while the significance test "
                    "ran (another promotion or rollback); promote again to test against the new holder"
                )
            verdict = tested[1] if tested is not None else None
            details: dict[str, Any] = {"gate_failures": failures} if failures else {}
            if verdict is not None:
                details["significance"] = verdict.to_dict()
            if current != row.model_pk:
                previous = (
                    None
                    if current is None
                    else conn.execute(select(S.models.c.version).where(S.models.c.model_pk == current)).scalar()
                )
                self._move_alias(conn, name, alias, row.model_pk, exists=current is not None)
                self._log(
                    conn,
                    name,
                    alias,
                    "promote",
                    None if previous is None else model_id_of(name, previous),
                    target,
                    forced=force,
                    reason=reason,
                    details=details or None,
                )
            return self._records(conn, [row])[0]

        return self._write(promote, what="promote in")

    def significance_rule(self, alias: str) -> SignificanceRule | None:
        """The ``require_significant`` rule of ``alias`` (None: its promotions need no test).

        Example:
            >>> ModelRegistry(":memory:", require_significant={"production": {"confidence": 0.99}}).significance_rule(
            ...     "production"
            ... )
            SignificanceRule(metric=None, confidence=0.99, n_bootstrap=1000)
        """
        return self._significance.get(check_name(alias, "alias"))

    def _test_significance(
        self,
        name: str,
        version: str | None,
        via: str | None,
        alias: str,
        gates: list[Gate],
        *,
        force: bool,
        significance: SignificanceTest | None,
    ) -> tuple[int | None, SignificanceVerdict | None] | None:
        """``(holder pk the test ran against, verdict)``, or None when no test is asked for or required.

        Raises PromotionGateError when the candidate is not better (unless forced) or when the
        alias requires a test and none was given; leaves archived candidates and failed gates to
        the write transaction (their errors, without a useless evaluation first).
        """
        rule = self._significance.get(alias)
        if significance is None and (rule is None or force):
            return None

        def read(conn: Connection) -> tuple[int | None, list[ModelRecord]]:
            row = self._find_row(conn, name, version, via)
            held = conn.execute(
                select(S.aliases.c.model_pk).where(S.aliases.c.name == name, S.aliases.c.alias == alias)
            ).scalar()
            if held is None or held == row.model_pk:
                return held, self._records(conn, [row])
            holder = conn.execute(select(S.models).where(S.models.c.model_pk == held)).one()
            return held, self._records(conn, [row, holder])

        held, records = self._read(read)
        candidate = records[0]
        if len(records) == 1 or candidate.status != _ACTIVE:
            return held, None  # no holder yet (or the candidate holds it already): nothing to beat
        if evaluate_gates(gates, candidate.metrics) and not force:
            return held, None  # the write refuses it with the gate failures
        holder = records[1]
        if significance is None:
            raise PromotionGateError(
                f"cannot promote {candidate.model_id} to {alias!r}: {alias!r} requires a significant improvement "
                f"over its holder {holder.model_id} (require_significant) and no significance test was given — pass "
                "significance=trainengine.evaluation.SignificanceCheck(...), run `trainengine registry promote "
                f"{candidate.model_id} {alias} --require-significant`, or force=True / --force (recorded)",
                [f"no significance test against {holder.model_id}"],
            )
        verdict = significance(candidate, holder, rule or SignificanceRule())
        if not verdict.significant and not force:
            raise PromotionGateError(
                f"cannot promote {candidate.model_id} to {alias!r}: {verdict.explain()} — keep {holder.model_id}, "
                "evaluate on more data, or pass force=True / --force (recorded in the history)",
                [verdict.explain()],
            )
        return held, verdict

    def rollback(self, name: str, alias: str, *, reason: str | None = None) -> ModelRecord:
        """Give ``alias`` back to its previous holder (like undo: a second rollback goes further back).

        Archived versions are skipped. Gates are not checked: the restored version held the alias before.

        Returns:
            The version that holds the alias now.

        Raises:
            RegistryError: the alias has no earlier (non-archived) holder to go back to.
        """
        name, alias = check_name(name), check_name(alias, "alias")

        def roll(conn: Connection) -> ModelRecord:
            rows = self._require_name(conn, name)
            by_id = {model_id_of(r.name, r.version): r for r in rows}
            events = conn.execute(
                select(S.history)
                .where(S.history.c.name == name, S.history.c.alias == alias)
                .order_by(S.history.c.event_id)
            ).all()
            stack = S.replay_alias(events)
            current_pk = conn.execute(
                select(S.aliases.c.model_pk)
                .where(S.aliases.c.name == name, S.aliases.c.alias == alias)
                .with_for_update()
            ).scalar()
            current = next((mid for mid, r in by_id.items() if r.model_pk == current_pk), None)
            if stack and stack[-1] == current:
                stack.pop()
            while stack and (stack[-1] not in by_id or by_id[stack[-1]].status != _ACTIVE):
                stack.pop()
            if not stack:
                what = f"{current} is its first holder" if current else "it has no earlier holder"
                raise RegistryError(
                    f"nothing to roll back to: alias {alias!r} of model {name!r} — {what} (history({name!r}, "
                    f"{alias!r}) shows its moves)"
                )
            target = by_id[stack[-1]]
            self._move_alias(conn, name, alias, target.model_pk, exists=current_pk is not None)
            self._log(conn, name, alias, "rollback", current, stack[-1], forced=False, reason=reason)
            return self._records(conn, [target])[0]

        return self._write(roll, what="roll back in")

    def archive(self, model_id: str | ModelRecord, *, reason: str | None = None) -> ModelRecord:
        """Retire a version: it loses its aliases (recorded), cannot be promoted, and is skipped by
        ``get_model(name)``, ``list_models()`` and rollbacks. Its artifact is kept. Archiving twice is a no-op."""
        name, version, via = self._target(model_id)

        def retire(conn: Connection) -> ModelRecord:
            row = self._find_row(conn, name, version, via)
            if row.status == _ARCHIVED:
                return self._records(conn, [row])[0]
            target = model_id_of(row.name, row.version)
            conn.execute(update(S.models).where(S.models.c.model_pk == row.model_pk).values(status=_ARCHIVED))
            held = sorted(conn.execute(select(S.aliases.c.alias).where(S.aliases.c.model_pk == row.model_pk)).scalars())
            conn.execute(delete(S.aliases).where(S.aliases.c.model_pk == row.model_pk))
            for alias in held or [None]:
                self._log(conn, name, alias, "archive", target, None, forced=False, reason=reason)
            return self._records(conn, conn.execute(select(S.models).where(S.models.c.model_pk == row.model_pk)).all())[
                0
            ]

        return self._write(retire, what="archive in")

    @staticmethod
    def _move_alias(conn: Connection, name: str, alias: str, model_pk: int, *, exists: bool) -> None:
        values = {"model_pk": model_pk, "updated_at": time.time()}
        if exists:
            conn.execute(update(S.aliases).where(S.aliases.c.name == name, S.aliases.c.alias == alias).values(**values))
        else:
            conn.execute(insert(S.aliases).values(name=name, alias=alias, **values))

    @staticmethod
    def _log(
        conn: Connection,
        name: str,
        alias: str | None,
        action: str,
        from_model: str | None,
        to_model: str | None,
        *,
        forced: bool,
        reason: str | None,
        details: dict[str, Any] | None = None,
    ) -> None:
        conn.execute(
            insert(S.history).values(
                name=name,
                alias=alias,
                action=action,
                from_model=from_model,
                to_model=to_model,
                forced=bool(forced),
                reason=reason,
                details_json=dumps_json(details),
                time=time.time(),
            )
        )

    # -- reading ---------------------------------------------------------------------------------------
    def get_model(
        self, name: str | None = None, version: str | None = None, tag: str | None = None, alias: str | None = None
    ) -> ModelRecord:
        """Find one registered version.

        * ``name`` + ``version``: that version (archived ones too).
        * ``name`` + ``alias``: the alias's holder.
        * ``name`` alone: the newest active version by semantic version (``1.10.0`` > ``1.9.0``).
        * ``tag`` (with or without ``name``): an alias of that name first, else the newest active
          version carrying that tag.
        * ``version`` alone: that version of whichever model has it.

        Without ``name``, a tag, alias or version held by several models is ambiguous: the error
        lists them and asks for ``name=``.

        Raises:
            ModelNotFoundError: nothing matches (the message lists what exists).
            RegistryValueError: the query is ambiguous or malformed.
        """
        if name is None and version is None and tag is None and alias is None:
            raise RegistryValueError(
                "get_model needs name=, version=, tag= or alias= (list_models() shows what is registered)"
            )
        if version is not None and (tag is not None or alias is not None):
            raise RegistryValueError("give version= or tag=/alias=, not both: a version names one model already")
        if tag is not None and alias is not None and tag != alias:
            raise RegistryValueError(f"give tag= or alias=, not both ({tag!r} vs {alias!r})")
        name = None if name is None else check_name(name)
        version = None if version is None else check_version(version)
        label = tag if tag is not None else alias
        label = None if label is None else check_name(label, "tag" if tag is not None else "alias")

        def find(conn: Connection) -> ModelRecord:
            if name is not None and label is None:
                return self._records(conn, [self._find_row(conn, name, version, None)])[0]
            if name is None and label is None:
                rows = conn.execute(select(S.models).where(S.models.c.version == version)).all()
                return self._records(conn, [self._one(conn, rows, f"version {version!r}", "version")])[0]
            assert label is not None  # both label-free queries returned above
            holders = (
                select(S.models)
                .join(S.aliases, S.aliases.c.model_pk == S.models.c.model_pk)
                .where(S.aliases.c.alias == label)
            )
            if name is not None:
                holders = holders.where(S.models.c.name == name)
            rows = conn.execute(holders).all()
            if rows or tag is None:
                if not rows:
                    return (
                        self._records(conn, [self._find_row(conn, name, None, label)])[0]
                        if name
                        else self._none_with(conn, label, "alias")
                    )
                return self._records(conn, [self._one(conn, rows, f"alias {label!r}", "alias")])[0]
            tagged = (
                select(S.models)
                .join(S.tags, S.tags.c.model_pk == S.models.c.model_pk)
                .where(S.tags.c.tag == label, S.models.c.status == _ACTIVE)
            )
            if name is not None:
                tagged = tagged.where(S.models.c.name == name)
            rows = conn.execute(tagged).all()
            if not rows:
                if name is not None:
                    self._require_name(conn, name)
                return self._none_with(conn, label, "tag", name)
            names = sorted({r.name for r in rows})
            if len(names) > 1:
                raise RegistryValueError(
                    f"tag {label!r} is carried by several models ({', '.join(names)}); say which: get_model(name=..., "
                    f"tag={label!r})"
                )
            return self._records(conn, [max(rows, key=lambda r: version_key(r.version))])[0]

        return self._read(find)

    def _one(self, conn: Connection, rows: Sequence[Any], what: str, kw: str) -> Any:
        if len(rows) == 1:
            return rows[0]
        if not rows:
            names = self._names(conn)
            listing = (
                ", ".join(f"{n} ({', '.join(r.version for r in reversed(self._rows_of(conn, n)))})" for n in names)
                or "nothing"
            )
            raise ModelNotFoundError(f"no model has {what} — registered: {listing}")
        names = sorted(r.name for r in rows)
        raise RegistryValueError(
            f"{what} belongs to several models ({', '.join(names)}); say which: get_model(name=..., {kw}=...)"
        )

    def _none_with(self, conn: Connection, label: str, kind: str, name: str | None = None) -> ModelRecord:
        scope = S.models.c.name == name if name is not None else true()
        held = sorted(
            set(
                conn.execute(
                    select(S.aliases.c.alias).join(S.models, S.models.c.model_pk == S.aliases.c.model_pk).where(scope)
                ).scalars()
            )
        )
        tag_names = sorted(
            set(
                conn.execute(
                    select(S.tags.c.tag).join(S.models, S.models.c.model_pk == S.tags.c.model_pk).where(scope)
                ).scalars()
            )
        )
        where = f" of model {name!r}" if name else ""
        raise ModelNotFoundError(
            f"no {'alias or tag' if kind == 'tag' else 'alias'} "
            f"{label!r}{where}{did_you_mean(label, held + tag_names)} — "
            f"aliases: {', '.join(held) or 'none'}; tags: {', '.join(tag_names) or 'none'}"
        )

    def resolve(self, ref: str | ModelRecord) -> ModelRecord:
        """The record a reference names: ``"name:version"``, ``"name@alias"`` or ``"name"`` (newest active).

        Example:
            >>> import tempfile, torch
            >>> f = f"{tempfile.mkdtemp()}/w.pt"
            >>> torch.save({"w": torch.ones(1)}, f)
            >>> reg = ModelRegistry(":memory:")
            >>> _ = reg.register_model("m", "1.9.0", f, copy_artifact=False)
            >>> _ = reg.register_model("m", "1.10.0", f, copy_artifact=False)
            >>> reg.resolve("m").version, reg.resolve("m:1.9.0").version
            ('1.10.0', '1.9.0')
        """
        if isinstance(ref, ModelRecord):
            return ref
        name, version, alias = parse_model_ref(ref)
        return self.get_model(name, version, alias=alias)

    def list_models(self, name: str | None = None, include_archived: bool = False) -> list[ModelRecord]:
        """Registered versions, by name, newest version first.

        Raises:
            ModelNotFoundError: ``name`` is given and has no versions.
        """
        checked = None if name is None else check_name(name)

        def fetch(conn: Connection) -> list[ModelRecord]:
            rows: Sequence[Any]
            if checked is not None:
                rows = self._require_name(conn, checked)
            else:
                rows = conn.execute(select(S.models)).all()
            if not include_archived:
                rows = [r for r in rows if r.status == _ACTIVE]
            rows = sorted(rows, key=lambda r: version_key(r.version), reverse=True)
            rows = sorted(rows, key=lambda r: r.name)  # stable: newest first within each name
            return self._records(conn, rows)

        return self._read(fetch)

    def history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Every alias move of a model (oldest first): ``name, alias, action (promote | rollback |
        archive), from_model, to_model, forced, reason, details, time``."""
        name = check_name(name)
        alias = None if alias is None else check_name(alias, "alias")

        def fetch(conn: Connection) -> list[dict[str, Any]]:
            self._require_name(conn, name)
            q = select(S.history).where(S.history.c.name == name)
            if alias is not None:
                q = q.where(S.history.c.alias == alias)
            return [
                {
                    "event_id": e.event_id,
                    "name": e.name,
                    "alias": e.alias,
                    "action": e.action,
                    "from_model": e.from_model,
                    "to_model": e.to_model,
                    "forced": bool(e.forced),
                    "reason": e.reason,
                    "details": json.loads(e.details_json) if e.details_json else None,
                    "time": iso_time(e.time),
                }
                for e in conn.execute(q.order_by(S.history.c.event_id))
            ]

        return self._read(fetch)
