package legoissuer

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestPersistRecords(t *testing.T) {
	const acct = "https://ca.example/acct/7"
	for _, tc := range []struct {
		desc    string
		domains []string
		want    []PersistRecord
	}{
		{desc: "one name", domains: []string{"a.test"}, want: []PersistRecord{
			{Owner: "_validation-persist.a.test", Value: "ca.example; accounturi=" + acct, Names: []string{"a.test"}}}},
		{desc: "a name and its wildcard: one record, policy=wildcard", domains: []string{"a.test", "*.a.test"}, want: []PersistRecord{
			{Owner: "_validation-persist.a.test", Value: "ca.example; accounturi=" + acct + "; policy=wildcard", Names: []string{"a.test", "*.a.test"}}}},
		{desc: "the wildcard first", domains: []string{"*.a.test", "a.test"}, want: []PersistRecord{
			{Owner: "_validation-persist.a.test", Value: "ca.example; accounturi=" + acct + "; policy=wildcard", Names: []string{"*.a.test", "a.test"}}}},
		{desc: "two names: two records", domains: []string{"a.test", "www.a.test"}, want: []PersistRecord{
			{Owner: "_validation-persist.a.test", Value: "ca.example; accounturi=" + acct, Names: []string{"a.test"}},
			{Owner: "_validation-persist.www.a.test", Value: "ca.example; accounturi=" + acct, Names: []string{"www.a.test"}}}},
	} {
		if got := persistRecords(tc.domains, "ca.example", acct); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: persistRecords = %+v, want %+v", tc.desc, got, tc.want)
		}
	}
	r := persistRecords([]string{"*.a.test"}, "ca.example", acct)[0]
	if got := r.String(); got != `_validation-persist.a.test. IN TXT "ca.example; accounturi=https://ca.example/acct/7; policy=wildcard"` {
		t.Errorf("zone line = %s", got)
	}
}

func TestCheckPersist(t *testing.T) {
	const acct = "https://ca.example/acct/7"
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	issuers := []string{"ca.example", "ca-alias.example"}
	plain := PersistRecord{Owner: "_validation-persist.a.test", Names: []string{"a.test"}}
	wild := PersistRecord{Owner: "_validation-persist.a.test", Names: []string{"a.test", "*.a.test"}}
	for _, tc := range []struct {
		desc    string
		txts    []string
		want    PersistRecord
		wantErr string
	}{
		{desc: "in place", txts: []string{"ca.example; accounturi=" + acct}, want: plain},
		{desc: "spaces, case of tags and issuer, the CA's other name", txts: []string{" CA-Alias.example ;AccountURI=" + acct + " ; Policy=WILDCARD"}, want: wild},
		{desc: "beside another CA's record and other TXT", txts: []string{"v=spf1 -all", "other-ca.example; accounturi=x", "ca.example; accounturi=" + acct}, want: plain},
		{desc: "none", want: plain, wantErr: "no TXT record for ca.example or ca-alias.example at _validation-persist.a.test"},
		{desc: "another CA's only", txts: []string{"other-ca.example; accounturi=" + acct}, want: plain, wantErr: "no TXT record for"},
		{desc: "another account", txts: []string{"ca.example; accounturi=https://ca.example/acct/8"}, want: plain, wantErr: "names another account (this one is " + acct + ")"},
		{desc: "no account", txts: []string{"ca.example; policy=wildcard"}, want: wild, wantErr: "names no accounturi"},
		{desc: "a wildcard without policy=wildcard", txts: []string{"ca.example; accounturi=" + acct}, want: wild, wantErr: "lacks policy=wildcard, which a.test,*.a.test needs"},
		{desc: "a policy that is not wildcard", txts: []string{"ca.example; accounturi=" + acct + "; policy=strict"}, want: wild, wantErr: "lacks policy=wildcard"},
		{desc: "expired", txts: []string{"ca.example; accounturi=" + acct + "; persistUntil=1700000000"}, want: plain, wantErr: "expired at 2023-11-14T22:13:20Z"},
		{desc: "not yet expired", txts: []string{"ca.example; accounturi=" + acct + "; persistUntil=1900000000"}, want: plain},
		{desc: "malformed", txts: []string{"ca.example; accounturi"}, want: plain, wantErr: "is malformed: parameter \"accounturi\" is not tag=value"},
		{desc: "a tag twice", txts: []string{"ca.example; accounturi=" + acct + "; accounturi=" + acct}, want: plain, wantErr: "appears twice"},
		{desc: "one bad, one good", txts: []string{"ca.example; accounturi=https://ca.example/acct/8", "ca.example; accounturi=" + acct}, want: plain},
	} {
		err := checkPersist(tc.txts, issuers, tc.want, acct, now)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: checkPersist = %v, want %q", tc.desc, err, tc.wantErr)
		}
	}
}
