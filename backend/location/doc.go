// Package location turns the repository string a user gives (-r or
// REPO_REPOSITORY) into a Location, and a Location into an open backend.
//
// The list of backends is explicit: Parse, Open and Create each switch on
// the scheme, so adding a backend means adding a case to each, and nothing
// registers itself behind the reader's back.
//
// Accepted forms:
//
//	/srv/repo, ./repo, ~/repo, repo   a local path (":" inside is fine)
//	local:PATH                        a local path, explicitly
//	s3:https://host[:port]/bucket[/prefix]
//	s3:http://host[:port]/bucket[/prefix]   an S3 server (http: local tests)
//	s3:bucket[/prefix]                AWS S3; credentials and region from
//	                                  the AWS environment (see backend/s3)
//	sftp:[user@]host[:port]:PATH      an SFTP server over SSH; PATH is
//	sftp://[user@]host[:port]/PATH    absolute or relative to the login
//	                                  directory (see backend/sftp)
//
// Anything else of the form "word:…" with only letters before the colon is
// an unknown backend, so a typo ("lcoal:/x") fails instead of creating a
// directory named "lcoal:".
package location
