"""Checkpoints, as one package: the model (``_model``), the file format (``_format``), the storage (``_storage``).

The dependency goes one way: ``_format`` builds on ``_model``, ``_storage`` on
both (the leaves ``_json`` and ``_paths`` hold the metadata check and the
storage paths); this ``__init__`` only re-exports. Import public names from
here (or from ``kaizen_ray``).

Loading unpickles, which can run code: load only checkpoints your own agents
wrote, or set a key (``$KAIZEN_RAY_CHECKPOINT_KEY``, ``_sign``) so that
files not signed with it are refused before they are unpickled.

>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> ck = Checkpoint.new("a1", 1, "completed", {"n": 1})
>>> _ = FileCheckpointStorage(folder).write(ck)
>>> load_checkpoint(ck.id, storage_path=folder).state
{'n': 1}
"""

from kaizen_ray.core.checkpoint._format import CHECKPOINT_FORMAT_VERSION, decode_checkpoint, encode_buffers, encode_checkpoint, encode_parts
from kaizen_ray.core.checkpoint._model import (
    Checkpoint,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointInfo,
    CheckpointNotFoundError,
    CheckpointSerializationError,
    CheckpointSignatureError,
    CheckpointStatus,
    CheckpointStorageError,
    new_checkpoint_id,
    validate_agent_name,
    validate_checkpoint_id,
)
from kaizen_ray.core.checkpoint._paths import default_storage_path, resolve_storage_path, storage_scheme
from kaizen_ray.core.checkpoint._storage import (
    FileCheckpointStorage,
    atomic_write_bytes,
    join_storage_path,
    list_checkpoints,
    load_checkpoint,
    read_blob,
    resolve_latest,
    write_blob,
)
from kaizen_ray.core.checkpoint._sign import KEY_ENV, resolve_key

__all__ = [
    "CHECKPOINT_FORMAT_VERSION", "Checkpoint", "CheckpointCorruptError", "CheckpointError", "CheckpointInfo",
    "CheckpointNotFoundError", "CheckpointSerializationError", "CheckpointSignatureError", "CheckpointStatus",
    "CheckpointStorageError", "FileCheckpointStorage", "KEY_ENV", "atomic_write_bytes", "decode_checkpoint",
    "default_storage_path", "encode_buffers", "encode_checkpoint", "encode_parts", "resolve_key",
    "join_storage_path", "list_checkpoints", "load_checkpoint", "new_checkpoint_id", "read_blob", "resolve_latest", "resolve_storage_path",
    "storage_scheme", "validate_agent_name", "validate_checkpoint_id", "write_blob",
]  # fmt: skip
