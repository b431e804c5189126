// Package ego_test checks the EGO service profile shipped in contrib/ego.
package ego_test

import (
	"encoding/xml"
	"os"
	"strings"
	"testing"

	"github.com/snowflock/snowflock/allocator/ego"
)

func TestServiceProfile(t *testing.T) {
	data, err := os.ReadFile("sfld.xml")
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		XMLName     xml.Name
		ServiceName string `xml:"ServiceName,attr"`
		Consumer    string `xml:"AllocationSpecification>ConsumerID"`
		Group       string `xml:"AllocationSpecification>ResourceSpecification>ResourceGroupName"`
		Command     string `xml:"ActivityDescription>ActivitySpecification>Command"`
		Credential  string `xml:"NeedCredential"`
	}
	if err := xml.Unmarshal(data, &p); err != nil {
		t.Fatalf("sfld.xml is not well-formed: %v", err)
	}
	if p.XMLName.Local != "ServiceDefinition" || p.ServiceName == "" {
		t.Errorf("root %v named %q", p.XMLName, p.ServiceName)
	}
	if !strings.HasPrefix(p.Consumer, ego.DefaultConsumer+"/") || p.Group != ego.DefaultResourceGroup {
		t.Errorf("consumer %q on %q; want a child of %s on %s", p.Consumer, p.Group, ego.DefaultConsumer, ego.DefaultResourceGroup)
	}
	if !strings.Contains(p.Command, "sfld") || !strings.Contains(p.Command, "SNOWFLOCK_ALLOCATOR_EGO_TOKEN") || p.Credential != "TRUE" {
		t.Errorf("the service does not run sfld with EGO's credential as token: %q", p.Command)
	}
}
