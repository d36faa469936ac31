"""One error hierarchy for the whole package.

Every error carries a stable, kebab-case ``code`` that scripts and docs can rely on, and a ``hint`` that tells the
user what to do next. The CLI turns these into ``error[CODE]: message`` / ``hint: …`` and an exit code, in one
place (``lorahub.cli.exits``); the SDK only raises them.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LorahubError(Exception):
    """Base of every error lorahub raises on purpose."""

    code: ClassVar[str] = "error"
    default_hint: ClassVar[str | None] = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


# --- paths -----------------------------------------------------------------------------------------------------


class PathNotFoundError(LorahubError, FileNotFoundError):
    code = "path-not-found"
    default_hint = "Check the path; relative paths are resolved from the current directory."


class NotAFileError(LorahubError, IsADirectoryError):
    code = "not-a-file"
    default_hint = "Give the path of one adapter file (.safetensors, .ckpt, .pt, .bin), not a directory."


class BaseNotCachedError(PathNotFoundError):
    """A Hugging Face repo id given as a base that the local cache does not hold (lorahub never downloads one)."""

    code = "base-not-cached"
    default_hint = "Fetch the base once with `hf download ORG/NAME`, or give the pipeline folder's path."


class FileMissingError(PathNotFoundError):
    """A catalogued version whose file is nowhere: not in the blob store, not at any recorded location."""

    code = "file-missing"
    default_hint = (
        "If it moved, `lorahub scan FOLDER` finds it by its digest; if it is gone, restore it from a backup. "
        "Its card, signatures and metadata stay catalogued."
    )


class FileReadError(LorahubError, OSError):
    code = "file-unreadable"
    default_hint = "Check the file's permissions and that the disk is readable."


class NotAFolderError(LorahubError, NotADirectoryError):
    code = "not-a-folder"
    default_hint = "Name a folder (it is created when missing), not a file."


class ToolInstallNotFoundError(PathNotFoundError):
    """A folder named as another tool's install (A1111, Forge, ComfyUI, InvokeAI) that holds none of the files that
    tool keeps in its install folder."""

    code = "tool-install-not-found"
    default_hint = (
        "Give the folder the tool runs from: the one with webui.py (A1111, Forge), folder_paths.py and comfy/ "
        "(ComfyUI) or invokeai.yaml (InvokeAI)."
    )


class ToolConfigError(LorahubError):
    """Another tool's own configuration (webui-user.sh, extra_model_paths.yaml, invokeai.yaml) that lorahub cannot
    read the way the tool does; lorahub does not guess at what the tool would make of it."""

    code = "tool-config-invalid"
    default_hint = "Fix or simplify the line named above; the tool's own documentation shows the usual forms."


# --- files that are not what they claim ------------------------------------------------------------------------


class InvalidFileError(LorahubError):
    """The file cannot be read safely; nothing in it is trusted."""

    code = "file-invalid"
    default_hint = "The file is damaged or not an adapter: download it again, or ask its author for a fresh copy."


class EmptyFileError(InvalidFileError):
    code = "file-empty"
    default_hint = "The file has no bytes: the download or copy did not finish. Fetch it again."


class TruncatedFileError(InvalidFileError):
    code = "file-truncated"
    default_hint = "The file ends early: the download or copy did not finish. Fetch it again and compare its SHA-256."


class HeaderTooLargeError(InvalidFileError):
    code = "header-too-large"


class HeaderJSONError(InvalidFileError):
    code = "header-not-json"


class HeaderSchemaError(InvalidFileError):
    code = "header-invalid"


class UnknownDtypeError(InvalidFileError):
    code = "dtype-unknown"
    default_hint = "The file uses a tensor type lorahub does not know; it may come from a newer safetensors."


class TensorOffsetsError(InvalidFileError):
    code = "offsets-invalid"


class TensorOverlapError(InvalidFileError):
    code = "offsets-overlap"


class TensorSizeError(InvalidFileError):
    code = "size-mismatch"


class MetadataError(InvalidFileError):
    code = "metadata-invalid"


class UnsupportedFileError(InvalidFileError):
    code = "file-unsupported"
    default_hint = "lorahub reads .safetensors files and scans pickled .ckpt/.pt/.pth/.bin files."


class UnsafePickleError(InvalidFileError):
    """A pickle that would run code outside the allow-list if it were loaded."""

    code = "pickle-dangerous"
    default_hint = (
        "Do not load this file with torch.load or any pickle-based tool. Ask its author for a .safetensors version."
    )

    def __init__(self, message: str, *, dangerous: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.dangerous = dangerous


# --- environment -----------------------------------------------------------------------------------------------


class MissingExtraError(LorahubError, ImportError):
    code = "missing-extra"

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs packages that are not installed",
            hint=f"pip install 'lorahub[{extra}]'",
        )
        self.extra = extra


# --- arguments (values a command or an SDK call was given) -----------------------------------------------------


class InvalidArgumentError(LorahubError, ValueError):
    """A value the caller gave is not usable; nothing was read or written because of it."""

    code = "argument-invalid"
    default_hint = "Check the value against the command's --help (or the SDK function's docstring)."


class MissingArgumentError(InvalidArgumentError):
    code = "argument-missing"
    default_hint = "Give what the message names; --help shows the command's arguments."


class ConflictingArgumentsError(InvalidArgumentError):
    code = "arguments-conflict"
    default_hint = "Drop one of them; --help says which options go together."


class UnknownChoiceError(InvalidArgumentError):
    code = "choice-unknown"
    default_hint = "Use one of the values the message lists."


class InvalidReferenceError(InvalidArgumentError):
    """An adapter reference (``NAME``, ``NAME@V``, a content digest, each optionally ``:WEIGHT``) that cannot be
    read; it is refused before anything is looked up or loaded."""

    code = "reference-invalid"
    default_hint = "Write NAME, NAME@VERSION or a content digest, optionally with :WEIGHT (e.g. pixel-art@2:0.7)."


class PromptTagError(InvalidArgumentError):
    code = "prompt-tag-invalid"
    default_hint = (
        "Write <lora:NAME> or <lora:NAME:WEIGHT> (NAME may carry @VERSION); escape a literal tag as \\<lora:…>."
    )


# --- identities and signatures ---------------------------------------------------------------------------------


class KeyNotFoundError(LorahubError, LookupError):
    code = "key-not-found"
    default_hint = 'List identities with `lorahub keys list`; create one with `lorahub keys create "Name <email>"`.'


class KeyExistsError(LorahubError):
    code = "key-exists"
    default_hint = "Identities and key files are never overwritten: choose another name, or see `lorahub keys list`."


class AmbiguousKeyError(LorahubError, LookupError):
    code = "key-ambiguous"
    default_hint = "Give more of the fingerprint, or the full name."


class PassphraseError(LorahubError):
    code = "key-passphrase"
    default_hint = (
        "Set the passphrase in the environment variable named by --passphrase-env (default LORAHUB_PASSPHRASE)."
    )


class KeyFileError(LorahubError):
    code = "key-invalid"
    default_hint = "Give a PEM file holding an ECDSA P-256 public key (`lorahub keys export NAME` writes one)."


class CardError(LorahubError):
    code = "card-invalid"
    default_hint = "The card does not follow schema lorahub.card/v1 (docs/reference/card.schema.json)."


class SignatureInvalidError(LorahubError):
    code = "signature-invalid"


class OmsBundleError(LorahubError):
    """An OpenSSF model-signing bundle that cannot be read: not JSON, not a sigstore bundle, a statement that is
    not a model signature or contradicts itself. Nothing in it was trusted."""

    code = "oms-bundle-invalid"
    default_hint = "Give the signature file `model_signing sign key` or `lorahub sign --oms` wrote, unedited."


class OmsBundleUnsupportedError(LorahubError):
    """A model-signing bundle of a kind lorahub does not check (certificate or Sigstore keyless signers, sharded
    hashing, the pre-1.0 format): refused rather than half-checked."""

    code = "oms-bundle-unsupported"
    default_hint = "Check it with the `model_signing verify` command that matches how it was signed."


# --- the catalog -----------------------------------------------------------------------------------------------


class AdapterNotFoundError(LorahubError, LookupError):
    code = "adapter-not-found"
    default_hint = "Run `lorahub list` or `lorahub search TEXT`; add files with `lorahub add FILE`."


class VersionExistsError(LorahubError):
    code = "version-exists"
    default_hint = "Versions are immutable: omit --version to get the next number."


class DuplicateContentError(LorahubError):
    code = "duplicate-content"

    def __init__(self, message: str, *, existing: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.existing = existing


class DatabaseError(LorahubError):
    code = "database-error"
    default_hint = "Check LORAHUB_DATABASE_URL and that the database server is reachable."


class AuditChainError(LorahubError):
    code = "audit-chain-broken"


class RoleRequiredError(LorahubError):
    """In a team's catalogue, the acting key lacks the role the operation needs (nothing was written)."""

    code = "role-required"
    default_hint = "Ask a team admin to grant the role (`lorahub team list` shows who holds which)."


class TeamError(LorahubError):
    """A team set-up step that cannot go ahead: a team config that cannot be read, a team that already exists, a
    grant to a key the catalogue does not know, the last admin's role revoked."""

    code = "team-invalid"
    default_hint = "See docs/team.md for the set-up steps."


class RestoreRefusedError(LorahubError):
    """A backup that does not verify (a blob's bytes, a card's signatures, the audit chain), or a home that is not
    empty; nothing was written."""

    code = "restore-refused"
    default_hint = "Restore into a fresh home (LORAHUB_HOME=NEW lorahub restore BACKUP) from an intact backup."


class PolicyError(LorahubError):
    code = "policy-invalid"
    default_hint = "Fix the policy file (docs/registry.md lists its keys), or remove it to use the defaults."


class VerificationFailedError(LorahubError):
    """Raised by callers that gate on ``verify``; the CLI maps it to its own exit code."""

    code = "verification-failed"


class PullRefusedError(VerificationFailedError):
    """``lorahub pull`` fetched an artifact whose checklist failed; nothing was written. ``report`` has every
    check (a :class:`lorahub.sdk.verifying.VerifyReport`)."""

    code = "pull-refused"
    default_hint = "`lorahub trust add KEY.pem` if you trust the signer; --json shows every check."

    def __init__(self, message: str, *, report: Any, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report


class DownloadError(LorahubError):
    code = "download-failed"


class HashMismatchError(LorahubError):
    code = "hash-mismatch"


class SettingsError(LorahubError):
    code = "settings-invalid"
    default_hint = "Fix the setting named above (`lorahub config show` shows the home and its config.toml)."


class PartialFailureError(LorahubError):
    """A batch finished, but some of its items failed (they are listed before this error)."""

    code = "partial-failure"


class NotCataloguedError(LorahubError):
    """An adapter given as a file where the operation needs a catalogued version (its signed card, its lineage)."""

    code = "adapter-not-catalogued"
    default_hint = "Add it first (lorahub add FILE) and name it by its catalogue name."


# --- OCI registries --------------------------------------------------------------------------------------------


class RegistryError(LorahubError):
    """An OCI registry refused a request, or answered with something the distribution spec does not allow."""

    code = "registry-error"
    default_hint = "The registry's own message is quoted above; check the reference and the registry's logs."


class RegistryUnreachableError(RegistryError):
    code = "registry-unreachable"
    default_hint = (
        "Check the host and port and that the registry is running; a local one for trying things out: "
        "docs/distribution.md, 'A registry on this machine'."
    )


class RegistryAuthError(RegistryError):
    code = "registry-auth"
    default_hint = (
        "Log in with `docker login HOST` (lorahub reads the Docker config, or REGISTRY_AUTH_FILE), or set "
        "LORAHUB_REGISTRY_USERNAME and LORAHUB_REGISTRY_PASSWORD."
    )


class InsecureRegistryError(RegistryError):
    """Plain HTTP asked for, or needed, where lorahub allows it only on this machine's loopback."""

    code = "registry-insecure"
    default_hint = "Use HTTPS; --insecure (plain HTTP) is accepted only for 127.0.0.1, ::1 and localhost."


class ArtifactNotFoundError(RegistryError, LookupError):
    code = "artifact-not-found"
    default_hint = "Check the repository and tag (or digest); `lorahub push` prints the reference it wrote."


class ArtifactInvalidError(RegistryError):
    """An artifact that is not a lorahub-pushable model: not ModelPack, no weight layer, no signed card."""

    code = "artifact-invalid"
    default_hint = "Pull only artifacts pushed by `lorahub push` (a ModelPack model with its signed card attached)."


# --- licences --------------------------------------------------------------------------------------------------


class LicenseForbiddenError(LorahubError):
    code = "license-forbidden"
    default_hint = "The reasons above cite the clauses; `lorahub license show ID` has the licence's terms."


class LicenseUncertainError(LorahubError):
    code = "license-uncertain"
    default_hint = "The law or the licence is unsettled here: ask counsel, or choose licences whose terms are clear."


class UnknownLicenseError(LorahubError, LookupError):
    code = "license-unknown"
    default_hint = "See `lorahub license list` for the identifiers and aliases lorahub knows."


class LicenseCatalogueError(LorahubError):
    """The licence catalogue (the packaged one or a replacement) cannot be used: every licence decision rests on
    it, so a malformed entry stops everything rather than being skipped."""

    code = "license-catalogue-invalid"
    default_hint = "Fix the entry in the licence catalogue; docs/licenses.md describes every field."


# --- conversion ------------------------------------------------------------------------------------------------


class ConversionRefusedError(LorahubError):
    """The adapter cannot be converted exactly; ``report`` (a ``ConversionReport``) says which modules stood in the
    way. Nothing is written."""

    code = "conversion-refused"
    default_hint = "Exact conversion covers LoRA/LoCon layers of SD 1.x, SD 2.x, SDXL, SD3 and FLUX.1 files so far."

    def __init__(self, message: str, *, report: object, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report


class ConversionOptionError(LorahubError):
    """An option of a conversion or resize that names nothing lorahub can do (a target, a dtype, a rank or energy
    out of range)."""

    code = "conversion-option-invalid"
    default_hint = "`lorahub convert --help` and `lorahub resize --help` list the choices."


class RepairRefusedError(LorahubError):
    """``convert --repair`` found nothing misnamed, misnamed keys that fit no known layout, or a key that could be
    repaired more than one way. Nothing is written."""

    code = "repair-refused"
    default_hint = "`lorahub inspect FILE` lists the keys and what loaders expect."


class ModuleIncompleteError(LorahubError):
    """A module lacks a tensor its layer kind needs (an ``up`` without its ``down``, a LoHa without ``hada_w2_a``)."""

    code = "module-incomplete"
    default_hint = "The file is damaged or was written by a tool lorahub does not know; `lorahub inspect` lists it."


class ModuleShapeError(LorahubError):
    """A module's tensors have shapes no layout of its kind explains (GLoRA factors, a DoRA magnitude vector)."""

    code = "module-shape-invalid"
    default_hint = "The file is damaged or was written by a tool lorahub does not know; `lorahub inspect` lists it."


class LayerKindUnsupportedError(LorahubError):
    """A module whose tensors form no layer kind lorahub has a ΔW rule for."""

    code = "layer-kind-unsupported"
    default_hint = (
        "lorahub computes ΔW for LoRA, LoCon, LoHa, LoKr, full, norm, set, GLoRA, OFT, BOFT and (IA)^3 modules; "
        "`lorahub inspect` shows what this one holds."
    )


class BaseWeightRequiredError(LorahubError):
    """The result depends on the base weight (GLoRA, OFT, BOFT, IA3, set, DoRA, or a convolution whose factors do
    not record its kernel size) and no base was given."""

    code = "base-required"
    default_hint = "Pass --base with the base model the adapter was trained on."


class BaseWeightMissingError(LorahubError):
    """The base checkpoint has no weight for a layer whose ΔW needs it."""

    code = "base-weight-missing"
    default_hint = "Pass the base checkpoint the adapter was trained on, as diffusers-named or SGM-named safetensors."


class DeltaShapeError(LorahubError):
    """A module's ΔW does not fit the shape of the base weight given for it."""

    code = "delta-shape-mismatch"
    default_hint = "The base is not the model the adapter was trained for (or a different size of it)."


class LayerUnnamedError(ConversionRefusedError):
    """A layer the target format has no name for (it would be dropped); nothing is written."""

    code = "layer-unnamed"
    default_hint = "Convert to a format that names this module (diffusers names every canonical layer)."

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, report=None, hint=hint)


class FusedLayerError(ConversionRefusedError):
    """Parts of an SD3/FLUX fused projection (``img_attn.qkv``, ``linear1``) that cannot be written back as one
    module; nothing is written."""

    code = "fused-layer-refused"
    default_hint = "Only LoRA and full deltas are fused exactly; --to diffusers keeps the parts apart."

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, report=None, hint=hint)


# --- loading, merging -----------------------------------------------------------------------------------------


class FamilyMismatchError(LorahubError):
    """An adapter made for one base model family applied to, or combined with, another."""

    code = "family-mismatch"
    default_hint = "Adapters only apply to the base model family they were trained on (lorahub inspect shows it)."


class UnknownAdapterNameError(AdapterNotFoundError):
    """A name in a prompt or a stack that the catalogue does not have; the message lists near matches."""

    code = "adapter-not-found"


class UnsupportedPipelineError(LorahubError):
    code = "pipeline-unsupported"
    default_hint = "Supported: StableDiffusion (1.x/2.x), StableDiffusionXL, StableDiffusion3 and Flux pipelines."


class AdapterNotLoadableError(LorahubError):
    """An adapter of the right family that this pipeline still cannot take exactly as it is (modules that do not map,
    a layer class or a fused module the ΔW patch cannot apply to, a component the pipeline lacks)."""

    code = "adapter-not-loadable"
    default_hint = "`lorahub inspect` shows the adapter's layers; bake it into the base (lorahub bake) instead."


class AdapterNameTakenError(LorahubError):
    code = "adapter-name-taken"
    default_hint = "Pass another adapter_name, or unload the adapter that holds the name first."


# --- provenance (C2PA Content Credentials) ---------------------------------------------------------------------


class CertificateInvalidError(LorahubError):
    """A certificate or chain that cannot sign Content Credentials (or does not belong to the identity)."""

    code = "certificate-invalid"
    default_hint = (
        "Give a PEM chain, leaf first, whose leaf holds the identity's public key (`lorahub keys export NAME`), "
        "is not a CA, and has KeyUsage digitalSignature and EKU emailProtection or documentSigning."
    )


class CertificateExpiredError(CertificateInvalidError):
    code = "certificate-expired"
    default_hint = (
        "Issue a fresh certificate from the home's CA (`lorahub keys issue-cert`), or import a renewed chain "
        "(`lorahub keys import-cert CHAIN.pem`)."
    )


class ImageFormatError(InvalidFileError):
    code = "image-unsupported"
    default_hint = "lorahub signs and reads Content Credentials in PNG, JPEG and WebP images."


class ContentCredentialsMissingError(VerificationFailedError):
    code = "credentials-missing"
    default_hint = "The image carries no C2PA manifest: it was never signed, or an editor stripped it."


class ContentCredentialsPresentError(LorahubError):
    code = "credentials-present"
    default_hint = (
        "The image already carries Content Credentials; signing it as newly created would discard them. "
        "Pass --replace (replace=True) if that is what you mean."
    )


class ContentCredentialsInvalidError(VerificationFailedError):
    code = "credentials-invalid"
    default_hint = "The image or its manifest changed after signing; the codes say which check failed."


class C2paFailedError(LorahubError):
    code = "c2pa-failed"
    default_hint = "The C2PA library refused the operation; run with LORAHUB_DEBUG=1 for details."


# --- training --------------------------------------------------------------------------------------------------


class TrainingError(LorahubError):
    """A training run cannot start or continue: bad settings, an unusable base or dataset, a checkpoint that does
    not belong to the run."""

    code = "training-failed"
    default_hint = (
        "Check the settings and files named above: `lorahub train --help` lists every option, docs/training.md "
        "explains them; a damaged checkpoint folder can be removed and the run resumed from an earlier one."
    )


class ConsentRefusedError(TrainingError):
    """The home policy refuses the dataset's consent (e.g. ``require_known_consent`` and an image of unknown
    consent); nothing was trained."""

    code = "consent-refused"
    default_hint = (
        "Record each image's consent in a sources file (lorahub dataset scan DIR --sources FILE), remove the "
        "images, or change the home policy (policy.toml)."
    )


# --- merging and baking ----------------------------------------------------------------------------------------


class UnmatchedLayersError(LorahubError):
    """Adapter layers that land on no tensor of the base: baking them would silently drop part of the adapter."""

    code = "layers-unmatched"
    default_hint = (
        "The base is not the model the adapter was trained for, or a component is missing from this base file "
        "(bake a single-component file with --component to leave the others out on purpose)."
    )


class LayersUnfitError(LorahubError):
    """Adapter layers that land on base tensors they cannot change: a ΔW of another size, a tensor type bake cannot
    write back exactly, a bias delta where the base has no bias. Nothing is written."""

    code = "layers-unfit"
    default_hint = "The adapter was trained for a different model (or a different size of it)."


class MergeOptionError(LorahubError):
    """A merge or bake asked for something that cannot be done at all: nothing to combine, an unknown method, an
    output that is the base itself."""

    code = "merge-option-invalid"
    default_hint = "`lorahub merge --help` and `lorahub bake --help` list the choices."


class MergeRefusedError(LorahubError):
    """Adapters that cannot be combined into one LoRA as asked (modules without a model path, layers a LoRA cannot
    carry exactly); nothing is written."""

    code = "merge-refused"
    default_hint = "Use --method svd --rank N: layers of other kinds are decomposed, and the error reported."


# --- the web catalogue (lorahub serve) -------------------------------------------------------------------------


class ServeAddressError(LorahubError):
    """``lorahub serve`` could not listen where it was told (the port is taken, the address is not this machine's)."""

    code = "serve-address-unavailable"
    default_hint = "Pick another --port (another program listens there), or a --host this machine has."


class RequestRefusedError(LorahubError):
    """A request the web catalogue refuses before it reaches the catalogue; ``status`` is its HTTP status."""

    code = "request-refused"
    status: ClassVar[int] = 400


class ForeignHostError(RequestRefusedError):
    """The Host header names a host the server does not answer for: a page on another site that re-pointed its own
    name at this machine (DNS rebinding) to read the catalogue."""

    code = "host-refused"
    default_hint = (
        "Open the catalogue as http://127.0.0.1:PORT/ or http://localhost:PORT/ (or start it with "
        "--allowed-host NAME for a name that reaches it)."
    )


class CsrfError(RequestRefusedError):
    """A request that would act (verify, upload, and with --allow-writes every write) without this browser's CSRF
    token, or sent from another site."""

    code = "csrf-failed"
    status = 403
    default_hint = "Reload the page and try again; API clients read the token from GET /api/session first."


class WritesDisabledError(RequestRefusedError):
    code = "writes-disabled"
    status = 403
    default_hint = (
        "The catalogue is read-only; start it with `lorahub serve --allow-writes` to add, sign, trust or "
        "remove from the browser."
    )


class WriteTokenError(RequestRefusedError):
    code = "write-token-required"
    status = 401
    default_hint = (
        "Open the link `lorahub serve --allow-writes` printed (it holds this session's token), or send "
        "the token as `Authorization: Bearer TOKEN`."
    )


class UploadTooLargeError(RequestRefusedError):
    code = "upload-too-large"
    status = 413
    default_hint = "Send a smaller file, or start the server with a larger --max-upload."


# --- blob stores -----------------------------------------------------------------------------------------------


class BlobStoreError(LorahubError):
    """The blob store (an S3-compatible bucket) refused a request or answered something lorahub cannot use."""

    code = "blob-store-error"
    default_hint = "`lorahub config show` names the store in force; check that the bucket exists and is yours."


class BlobStoreUnreachableError(BlobStoreError):
    code = "blob-store-unreachable"
    default_hint = (
        "Check the endpoint (AWS_ENDPOINT_URL, or endpoint_url in the AWS profile) and that the server is running."
    )


class BlobStoreAuthError(BlobStoreError):
    code = "blob-store-auth"
    default_hint = (
        "Give credentials the standard way: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a "
        "profile in ~/.aws/credentials; they need read, write, list and delete rights on the bucket."
    )


class BlobDamagedError(BlobStoreError):
    """Bytes read from the blob store that do not hash to the digest they are stored under; nothing kept them."""

    code = "blob-damaged"
    default_hint = (
        "The object was changed or damaged in the store. If another copy exists (a library file, another home), "
        "`lorahub rm` the version, `lorahub gc`, and add that copy again."
    )


class BlobLeaseLostError(LorahubError):
    """A writer's lease on a blob expired before its version was recorded, so garbage collection may have deleted
    the blob; nothing was recorded."""

    code = "blob-lease-lost"
