package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// IntegrityCheck runs PRAGMA integrity_check on the database file at path
// and returns its verdict: "ok", or the problems it lists joined by "; ".
// The file is opened read-only and immutable: a freshly restored image has
// no -wal or -shm file and this check must not create them (a WAL-mode
// image would otherwise get both next to it).
func IntegrityCheck(ctx context.Context, path string) (string, error) {
	dsn, err := dsnFor(path)
	if err != nil {
		return "", fmt.Errorf("integrity check %s: %w", path, err)
	}
	db, err := sql.Open("sqlite", dsn+"&immutable=1")
	if err != nil {
		return "", fmt.Errorf("integrity check %s: %w", path, err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "PRAGMA integrity_check")
	if err != nil {
		return "", fmt.Errorf("integrity check %s: %w", path, explain(err))
	}
	defer rows.Close()
	var msgs []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return "", fmt.Errorf("integrity check %s: %w", path, err)
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("integrity check %s: %w", path, explain(err))
	}
	return strings.Join(msgs, "; "), nil
}
