"""The app's dialogs: watched folders, settings, failures. They only ask and show; the
window passes their requests to the session."""
