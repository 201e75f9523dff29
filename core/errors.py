"""Exceptions and warnings that the user sees as one clear line."""


class WeldreviewError(Exception):
    """Base of every error weldreview reports to the user as a one-line message."""


class ImageLoadError(WeldreviewError, ValueError):
    """A radiograph could not be read or is unusable; the message names the file and the reason."""


class ModelFileError(WeldreviewError, ValueError):
    """A model file is missing, corrupt or does not match what weldreview expects."""


class CalibrationError(WeldreviewError, ValueError):
    """Thresholds cannot be calibrated as asked (e.g. too few okay patches for the target FPR)."""


class StoreError(WeldreviewError):
    """The database cannot be opened or written; the message says why and what to do."""


class WeldreviewWarning(UserWarning):
    """Something was accepted but changed on the way (e.g. RGB converted to grey)."""
