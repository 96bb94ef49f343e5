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
