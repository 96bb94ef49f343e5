"""Errors that the command line and the app turn into one clear sentence for the user."""


class PhotosearchError(Exception):
    """Base class: the message is shown to the user as is, without a traceback."""


class FolderNotFoundError(PhotosearchError):
    pass


class LibraryLockedError(PhotosearchError):
    pass


class EmptyQueryError(PhotosearchError):
    pass


class ModelMismatchError(PhotosearchError):
    pass


class PhotoNotInLibraryError(PhotosearchError):
    pass


class ModelLoadError(PhotosearchError):
    pass


class LibraryUnreadableError(PhotosearchError):
    """The library directory or its database cannot be opened (permissions, corruption)."""


class DiskFullError(PhotosearchError):
    """No space left for the library: what was committed before stays; `indexed` is how
    many photos the interrupted pass had indexed (None outside indexing)."""

    def __init__(self, message: str, indexed: int | None = None) -> None:
        super().__init__(message)
        self.indexed = indexed
