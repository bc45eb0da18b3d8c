"""`tillbox admin`: the staff's console in the terminal (Textual), a second entry point beside
the HTTP server. It is wired by the same container and calls the same services, with no HTTP
in between; every action it takes is audited under the signed-in person, source `console`."""
